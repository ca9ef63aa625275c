"""Every worker sagaline ships, by name (`python -m consumers <name>`, `sagaline up`)."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from consumers.approvals.spec import SPEC as APPROVALS
from consumers.courses.spec import SPEC as COURSES
from consumers.documents.spec import SPEC as DOCUMENTS
from consumers.inventory.spec import SPEC as INVENTORY
from consumers.notifications.spec import SPEC as NOTIFICATIONS
from consumers.payments.spec import SPEC as PAYMENTS
from consumers.runtime import WorkerSpec
from consumers.service import build_worker
from consumers.settings import WorkerSettings
from consumers.shipping.spec import SPEC as SHIPPING
from sagaline.settings import Settings

_SPECS = (PAYMENTS, INVENTORY, SHIPPING, COURSES, NOTIFICATIONS, DOCUMENTS, APPROVALS)
"""In workflow order: order, enrollment, document approval."""

WORKERS: dict[str, WorkerSpec] = {spec.name: spec for spec in _SPECS}


def build_app(
    name: str, settings: Settings, config: WorkerSettings | None = None
) -> AsgiFastStream:
    """The named worker's app; KeyError for an unknown name."""
    return build_worker(WORKERS[name], settings, config)
