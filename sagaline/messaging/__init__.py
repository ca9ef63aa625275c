"""Broker plumbing shared by the orchestrator and the workers: parsing, retry, parking."""
