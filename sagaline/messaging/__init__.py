"""Broker plumbing shared by the orchestrator and the workers: parsing, retry, parking."""

from sagaline.messaging.wire import install_lenient_timestamps

# Every process that talks to the broker imports this package before it connects.
install_lenient_timestamps()
