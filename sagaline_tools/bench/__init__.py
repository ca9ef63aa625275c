"""`sagaline bench`: throughput, latency, scale and timer figures measured on one broker and DB.

Every measurement runs against a private broker namespace and a private database created for
the run (and removed after it), beside a same-run baseline: a bare aio-pika relay doing the
same broker work (consume, persistent publish with confirms, ack) without any saga logic.
The pure parts (sizes, statistics, goals, the report table) have no I/O and are unit-tested.
"""
