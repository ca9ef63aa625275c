"""sagaline: a saga orchestrator for RabbitMQ and PostgreSQL (shared runtime and CLI)."""

__version__ = "0.1.0"
