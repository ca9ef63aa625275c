"""The sagaline orchestrator: engine, Postgres store, outbox relay, timers and workflows."""
