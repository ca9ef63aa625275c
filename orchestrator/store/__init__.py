"""The orchestrator's Postgres store: one transaction per saga step."""
