"""Alembic migrations of sagaline: one history, schemas `saga` and one per worker."""
