"""The orchestrator's Postgres store: steps applied in one transaction per batch.

- `saga_store.py`: SagaStore, the facade the intake, timers and operator tools call;
- `plan.py`: decides a batch's steps (pure apart from tracing) and plans the rows to write;
- `sql.py`: every statement on the saga tables (claim inbox, load, write, timers);
- `tables.py`: the tables, for migrations and operator queries.
"""

from orchestrator.store.saga_store import SagaStore, StepResult

__all__ = ["SagaStore", "StepResult"]
