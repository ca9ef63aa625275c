"""A worker's inbox: one row per command it has handled, holding the reply it sent.

The row is inserted *before* the handler runs, in the same transaction as the handler's effect.
A second delivery of the same command (redelivery, retry, operator replay, or a concurrent
duplicate, which waits on the primary key until the first transaction ends) finds the row and
gets the stored reply back byte for byte: the effect happens once, the answer is always the same.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    String,
    Table,
    TextClause,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.base import ReplyEvent
from contracts.envelope import Envelope, EnvelopeHeader, new_envelope
from contracts.ids import derived_id


def inbox_table(metadata: MetaData) -> Table:
    """The inbox table in the metadata's schema (every worker has its own, same shape).

    reply_type and reply_body are NULL only inside the transaction that claims the row: the
    handler's reply is written before commit, so a committed row always has both.
    """
    return Table(
        "inbox",
        metadata,
        Column("message_id", UUID(as_uuid=True), primary_key=True),
        Column("command_type", String(100), nullable=False),
        Column("reply_type", String(100)),
        Column("reply_body", LargeBinary),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


@dataclass(frozen=True)
class StoredReply:
    """A reply envelope as published: its JSON body and the ids its AMQP properties mirror."""

    body: bytes
    header: EnvelopeHeader

    @classmethod
    def of(cls, envelope: Envelope[Any]) -> StoredReply:
        body = envelope.to_json()
        return cls(body=body, header=EnvelopeHeader.model_validate_json(body))

    @classmethod
    def from_body(cls, body: bytes) -> StoredReply:
        return cls(body=body, header=EnvelopeHeader.model_validate_json(body))


def reply_message_id(command_id: uuid.UUID) -> uuid.UUID:
    """Deterministic, so a reply re-built for the same command is recognisably the same reply;
    with the command id's time prefix, so replies sort with their saga (contracts.ids)."""
    return derived_id(command_id, "reply")


def reply_envelope(command: Envelope[Any], reply: ReplyEvent) -> Envelope[ReplyEvent]:
    return new_envelope(
        reply,
        correlation_id=command.correlation_id,
        causation_id=command.message_id,
        message_id=reply_message_id(command.message_id),
    )


# One statement for a whole batch's claims and one for its replies, instead of two per command
# (each statement is a round trip and a syscall, the worker's main cost).
@functools.cache  # built once per table: SQLAlchemy then reuses its compiled form
def _claim_many(inbox: Table) -> TextClause:
    return text(
        f"INSERT INTO {inbox.schema}.{inbox.name} (message_id, command_type) "
        "SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[])) "
        "ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
    )


@functools.cache
def _store_one(inbox: Table) -> TextClause:
    """Run once per reply (asyncpg sends them in one round trip): an UPDATE ... FROM unnest
    join's generic plan, made while the inbox was still small, stays a sequential scan of it
    for the connection's life; a row by its primary key is an index probe whatever the
    planner knows (tests/integration/test_plans.py)."""
    return text(
        f"UPDATE {inbox.schema}.{inbox.name} SET reply_type = :reply_type, "
        "reply_body = :reply_body WHERE message_id = :message_id"
    )


async def claim_batch(
    conn: AsyncConnection, inbox: Table, commands: Sequence[Envelope[Any]]
) -> dict[uuid.UUID, StoredReply]:
    """Claim inbox rows for many commands at once: the replies stored for those handled before.

    A command missing from the result is new and its row is claimed by this transaction.
    Rows are inserted in id order, so two replicas' batches take their locks in one order.
    """
    types = {command.message_id: command.type for command in commands}
    ids = sorted(types)
    inserted = await conn.execute(
        _claim_many(inbox), {"ids": ids, "types": [types[i] for i in ids]}
    )
    earlier = set(ids) - {row[0] for row in inserted}
    if not earlier:
        return {}
    rows = await conn.execute(
        select(inbox.c.message_id, inbox.c.reply_body).where(inbox.c.message_id.in_(earlier))
    )
    replies: dict[uuid.UUID, StoredReply] = {}
    for message_id, body in rows:
        if body is None:  # cannot happen after commit (see inbox_table)
            raise RuntimeError("inbox row without a stored reply")
        replies[message_id] = StoredReply.from_body(bytes(body))
    return replies


async def store_replies(
    conn: AsyncConnection, inbox: Table, replies: Mapping[uuid.UUID, StoredReply]
) -> None:
    if not replies:
        return
    await conn.execute(
        _store_one(inbox),
        [
            {"message_id": message_id, "reply_type": reply.header.type, "reply_body": reply.body}
            for message_id, reply in replies.items()
        ],
    )
