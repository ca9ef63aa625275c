"""Which worker consumes which command. Workers bind their queue to exactly these types."""

from __future__ import annotations

from contracts import order
from contracts.base import Command

WORKER_COMMANDS: dict[str, tuple[type[Command], ...]] = {
    "payments": (order.ProcessPayment, order.RefundPayment),
    "inventory": (order.ReserveInventory, order.ReleaseInventory),
    "shipping": (order.CreateShipment, order.CancelShipment),
}
# enrollment-routes-here
# documents-routes-here


def worker_for(command: type[Command]) -> str:
    for worker, types in WORKER_COMMANDS.items():
        if command in types:
            return worker
    raise LookupError(f"no worker consumes {command.message_type}")
