"""Write RabbitMQ definitions for sagaline: one user per process role, least privilege.

    .venv/bin/python deploy/rabbitmq/make_definitions.py > definitions.json
    .venv/bin/python deploy/rabbitmq/make_definitions.py --namespace shop --vhost /shop > ...

Passwords come from SAGALINE_RABBITMQ_PASSWORD_<ROLE> (ORCHESTRATOR, PAYMENTS, ..., OPERATOR,
CONSOLE, CONSOLE_VIEWER, ADMIN); a role without one gets the development value `<user>-dev`.
The checked-in deploy/rabbitmq/definitions.json is this script's output with those development
values: generate your own, with your passwords, for anything shared (docker-compose.yml reads
the file named by SAGALINE_RABBITMQ_DEFINITIONS). Only salted SHA-256 hashes are written, never
a password.

The file also declares the whole topology (exchanges, every consumer's work, retry and parking
queue with its arguments, and the bindings), from the same contracts the processes use, for the
namespace, retry delays (SAGALINE_RETRY_DELAYS) and delivery limit (SAGALINE_DELIVERY_LIMIT)
given. That is what lets the roles stay narrow: RabbitMQ requires *read* permission on a queue
to create it with a dead-letter exchange, so a process that created another's queue could also
consume it; re-declaring an existing queue needs no such right. Regenerate the file when the
retry delays, the delivery limit or the workflows change.

Each role may touch only the names it needs (regexes over `<namespace>.` names; RabbitMQ checks
configure for declare/delete, write for publish/bind-to-queue, read for consume/get/bind-from):
  orchestrator  declares every queue (commands stay routable before a worker first starts),
                consumes its own queue, publishes commands and events, parks and retries its own
                messages, and counts every parking queue for /metrics;
  <worker>      declares its own queues and the orchestrator's (replies stay routable before the
                orchestrator first starts), consumes only its own queue, publishes events
                (replies), parks and retries its own messages;
  operator      the CLI: publishes events (demos), reads and replays parking queues; declares
                only a replay job's private watch queue;
  console       the operations console: reads and replays parking queues, consumes its feed
                (a copy of every parked message) and declares it and its watch queues;
  console-viewer
                a read-only console: consumes only its feed; cannot take a parked message;
  admin         the management UI's administrator (a node that loads definitions at boot creates
                no default user); no sagaline process uses it.
Broker permissions say where a user may publish, not what: any user with write access to the
default exchange (every role, for retries and replays) can put a message in any queue. So the
processes also check *who* sent a message, by its RabbitMQ-validated `user_id`: workers take
commands only from the users in SAGALINE_COMMAND_SENDERS, the orchestrator replies only from
SAGALINE_REPLY_SENDERS (`sender_settings` gives the values docker-compose.yml sets).
Retry and parking moves made by the broker (TTL and delivery-limit dead-lettering) need no
user permission.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HASHING = "rabbit_password_hashing_sha256"
DEFAULT_EXCHANGE = "amq.default"
"""The name RabbitMQ checks permissions against when a client publishes to the default ("")
exchange (retry copies and replays are published straight to a queue that way)."""


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def check_password(stored_hash: str, password: str) -> bool:
    raw = base64.b64decode(stored_hash)
    return password_hash(password, raw[:4]) == stored_hash


def _alternatives(names: Sequence[str]) -> str:
    return "|".join(re.escape(n) for n in names)


def permissions(namespace: str, workers: Sequence[str]) -> dict[str, dict[str, str]]:
    """configure/write/read regexes per role, anchored at both ends."""
    ns = re.escape(namespace)
    consumers = ["orchestrator", *workers]
    exchanges = r"(?:events|commands|parking)"
    own_queues = r"(?:\.retry\.[0-9]+ms|\.parking)?"
    everyone = _alternatives(consumers)
    # The console's copy of everything parked (its index), and the private queues a replay job
    # binds to the parking exchange to see re-failures (sagaline_tools/console/replay.py).
    feed = rf"{ns}\.console\.parked-feed"
    watch = rf"{ns}\.replay-watch\.[0-9]+-[0-9a-f]+"
    roles = {
        "orchestrator": {
            "configure": rf"^{ns}\.(?:{exchanges}|(?:{everyone}){own_queues})$",
            "write": rf"^(?:{re.escape(DEFAULT_EXCHANGE)}|{ns}\.(?:{exchanges}"
            rf"|(?:{everyone})(?:\.parking)?))$",
            "read": rf"^{ns}\.(?:{exchanges}|orchestrator|(?:{everyone})\.parking)$",
        },
        "operator": {
            "configure": rf"^{watch}$",
            "write": rf"^(?:{re.escape(DEFAULT_EXCHANGE)}|{ns}\.events|{watch})$",
            "read": rf"^{ns}\.(?:(?:{everyone})\.parking|parking)$|^{watch}$",
        },
        "console": {
            "configure": rf"^(?:{feed}|{watch})$",
            "write": rf"^(?:{re.escape(DEFAULT_EXCHANGE)}|{feed}|{watch})$",
            "read": rf"^{ns}\.(?:(?:{everyone})\.parking|parking)$|^(?:{feed}|{watch})$",
        },
        "console-viewer": {
            "configure": rf"^{feed}$",
            "write": rf"^{feed}$",
            "read": rf"^(?:{ns}\.parking|{feed})$",
        },
    }
    for worker in workers:
        me = re.escape(worker)
        roles[worker] = {
            "configure": rf"^{ns}\.(?:{exchanges}|(?:{me}|orchestrator){own_queues})$",
            "write": rf"^(?:{re.escape(DEFAULT_EXCHANGE)}|{ns}\.(?:events|parking"
            rf"|(?:{me}|orchestrator)(?:\.parking)?))$",
            "read": rf"^{ns}\.(?:{exchanges}|{me})$",
        }
    return roles


def user_name(namespace: str, role: str) -> str:
    return f"{namespace}-{role}"


def sender_settings(namespace: str, workers: Sequence[str]) -> dict[str, str]:
    """Who may send what, as the processes' settings (docker-compose.yml sets these values):
    workers execute commands from the orchestrator, the orchestrator takes replies from the
    workers. The operator and the console are in both lists because `sagaline dlq replay` and
    the console's replays send a parked message back as their own user; drop them where no
    command may come from a person."""
    people = f"{user_name(namespace, 'operator')},{user_name(namespace, 'console')}"
    return {
        "SAGALINE_COMMAND_SENDERS": f"{user_name(namespace, 'orchestrator')},{people}",
        "SAGALINE_REPLY_SENDERS": ",".join([*(user_name(namespace, w) for w in workers), people]),
    }


@dataclass(frozen=True)
class Layout:
    """What the processes of one build declare, as plain names (from contracts)."""

    namespace: str
    retry_delays_ms: tuple[int, ...]
    delivery_limit: int
    worker_commands: Mapping[str, Sequence[str]]
    """Worker -> command types bound to its work queue."""
    orchestrator_events: Sequence[str]
    """Event types bound to the orchestrator's work queue (workflow events and replies)."""

    @property
    def workers(self) -> list[str]:
        return list(self.worker_commands)


def layout_of_this_build(
    namespace: str, retry_delays_ms: tuple[int, ...], delivery_limit: int
) -> Layout:
    sys.path.insert(0, str(ROOT))
    from contracts.registry import reply_types
    from contracts.routes import WORKER_COMMANDS
    from orchestrator.workflows import WORKFLOWS

    events = {e for machine in WORKFLOWS.values() for e in machine.consumed_events}
    events |= {t.message_type for t in reply_types()}
    return Layout(
        namespace,
        retry_delays_ms,
        delivery_limit,
        {w: [c.message_type for c in commands] for w, commands in WORKER_COMMANDS.items()},
        sorted(events),
    )


def topology(layout: Layout, vhost: str) -> dict[str, list[dict[str, Any]]]:
    """Exchanges, queues (with the arguments the processes declare) and bindings."""
    sys.path.insert(0, str(ROOT))
    from contracts.topology import Topology

    t = Topology(layout.namespace, layout.retry_delays_ms, layout.delivery_limit)
    exchanges = [
        {"name": name, "vhost": vhost, "type": kind, "durable": True, "auto_delete": False,
         "internal": False, "arguments": {}}
        for name, kind in (
            (t.events_exchange, "topic"),
            (t.commands_exchange, "topic"),
            (t.parking_exchange, "direct"),
        )
    ]  # fmt: skip
    queues: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []

    def queue(name: str, arguments: dict[str, Any]) -> None:
        queues.append(
            {"name": name, "vhost": vhost, "durable": True, "auto_delete": False,
             "arguments": arguments}
        )  # fmt: skip

    def bind(source: str, queue_name: str, key: str) -> None:
        bindings.append(
            {"source": source, "vhost": vhost, "destination": queue_name,
             "destination_type": "queue", "routing_key": key, "arguments": {}}
        )  # fmt: skip

    routes = {"orchestrator": (t.events_exchange, list(layout.orchestrator_events))}
    for worker, commands in layout.worker_commands.items():
        routes[worker] = (t.commands_exchange, list(commands))
    for consumer, (exchange, keys) in routes.items():
        work = t.work_queue(consumer)
        queue(work, t.work_queue_arguments(consumer))
        for key in keys:
            bind(exchange, work, key)
        for delay in t.retry_delays_ms:
            queue(t.retry_queue(consumer, delay), t.retry_queue_arguments(consumer, delay))
        queue(t.parking_queue(consumer), t.parking_queue_arguments())
        bind(t.parking_exchange, t.parking_queue(consumer), work)
    # The console's feed (sagaline_tools/console/index.py): a copy of every parked message,
    # declared here so that copies wait for a console that is not running yet.
    from sagaline_tools.console.index import feed_arguments, feed_queue

    feed = feed_queue(t)
    queue(feed, feed_arguments())
    for consumer in routes:
        bind(t.parking_exchange, feed, t.work_queue(consumer))
    return {"exchanges": exchanges, "queues": queues, "bindings": bindings}


def definitions(
    layout: Layout,
    passwords: Mapping[str, str],
    vhost: str = "/",
) -> dict[str, Any]:
    """The definitions document; `passwords` by role (missing roles get `<user>-dev`)."""
    roles = permissions(layout.namespace, layout.workers)
    roles["admin"] = {"configure": ".*", "write": ".*", "read": ".*"}
    users = []
    grants = []
    for role, regexes in roles.items():
        name = user_name(layout.namespace, role)
        password = passwords.get(role) or f"{name}-dev"
        users.append(
            {"name": name, "password_hash": password_hash(password), "hashing_algorithm": HASHING,
             "tags": ["administrator"] if role == "admin" else []}
        )  # fmt: skip
        grants.append({"user": name, "vhost": vhost, **regexes})
    return {
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "users": users,
        "vhosts": [{"name": vhost}],
        "permissions": grants,
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        **topology(layout, vhost),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--namespace", default=os.environ.get("SAGALINE_NAMESPACE", "sagaline"))
    parser.add_argument("--vhost", default="/")
    parser.add_argument(
        "--retry-delays",
        default=os.environ.get("SAGALINE_RETRY_DELAYS", "1,5,30"),
        help="seconds, comma-separated (as SAGALINE_RETRY_DELAYS)",
    )
    parser.add_argument(
        "--delivery-limit", type=int, default=int(os.environ.get("SAGALINE_DELIVERY_LIMIT", "20"))
    )
    args = parser.parse_args(argv)
    delays = tuple(int(float(d) * 1000) for d in args.retry_delays.split(",") if d.strip())
    layout = layout_of_this_build(args.namespace, delays, args.delivery_limit)
    roles = ["orchestrator", "operator", "console", "console-viewer", "admin", *layout.workers]
    passwords = {
        role: os.environ.get(f"SAGALINE_RABBITMQ_PASSWORD_{role.upper().replace('-', '_')}", "")
        for role in roles
    }
    document = definitions(layout, passwords, args.vhost)
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
