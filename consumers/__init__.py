"""sagaline's workers: one package per participant, each with its own schema and inbox.

Every worker has the same shape (consumers.runtime.WorkerSpec) and runs as its own process:
`python -m consumers <name>`. Nothing connects at import time.
"""

from consumers.registry import WORKERS, build_app
from consumers.runtime import WorkerSpec
from consumers.service import build_worker
from consumers.settings import WorkerSettings

__all__ = ["WORKERS", "WorkerSettings", "WorkerSpec", "build_app", "build_worker"]
