"""contracts.ids: ids that sort by time keep new rows on the indexes' newest pages."""

from __future__ import annotations

import uuid

from contracts.envelope import new_envelope
from contracts.ids import derived_id, uuid7
from contracts.order import OrderCancellationRequested

SECOND_NS = 1_000_000_000


def test_version_7_ids_sort_by_the_millisecond_they_were_made_in() -> None:
    made = [uuid7(now_ns=1_765_000_000 * SECOND_NS + i * 1_000_000) for i in range(200)]
    assert sorted(made) == made  # one per millisecond: each sorts after the one before
    first = made[0]
    assert (first.version, first.variant) == (7, uuid.RFC_4122)
    assert int.from_bytes(first.bytes[:6], "big") == 1_765_000_000_000  # Unix milliseconds
    same_instant = {uuid7(now_ns=1_765_000_000 * SECOND_NS) for _ in range(100)}
    assert len(same_instant) == 100  # the random bits keep ids of one millisecond apart


def test_a_derived_id_is_deterministic_and_keeps_its_bases_time() -> None:
    saga = uuid7(now_ns=1_765_000_000 * SECOND_NS)
    command = derived_id(saga, "3:0:ProcessPayment")
    assert command == derived_id(saga, "3:0:ProcessPayment")  # a decision re-made: same id
    assert command != derived_id(saga, "3:1:ProcessPayment")
    assert command != derived_id(uuid7(now_ns=1_765_000_000 * SECOND_NS), "3:0:ProcessPayment")
    assert command.bytes[:6] == saga.bytes[:6]
    assert (command.version, command.variant) == (8, uuid.RFC_4122)
    reply = derived_id(command, "reply")
    assert reply.bytes[:6] == saga.bytes[:6]  # the reply sorts with its saga's start too


def test_sagas_started_later_get_commands_that_sort_later() -> None:
    sagas = [uuid7(now_ns=1_765_000_000 * SECOND_NS + i * 5_000_000) for i in range(50)]
    commands = [derived_id(saga, "1:0:ProcessPayment") for saga in sagas]
    assert sorted(commands) == commands


def test_an_envelope_gets_a_time_ordered_message_id_unless_one_is_given() -> None:
    event = OrderCancellationRequested(order_id="o-1", reason="changed my mind")
    made = new_envelope(event, correlation_id=uuid.uuid4())
    assert made.message_id.version == 7
    given = uuid.uuid4()
    assert new_envelope(event, correlation_id=uuid.uuid4(), message_id=given).message_id == given


def test_derived_ids_are_the_ones_earlier_releases_made() -> None:
    # A step decided again after an upgrade (a conflict, an operator's re-send) must name its
    # commands, timers and replies as the release before did, or workers would run them twice.
    saga = uuid.UUID("0193a5c0-7e00-7abc-8def-0123456789ab")
    made_before = {  # derived_id until 2026-12-07: uuid5(base, name), then base's time bits
        "3:0:ProcessPayment": "0193a5c0-7e00-82c1-9d5e-296141ba5b1a",
        "timer:step-timeout:4": "0193a5c0-7e00-861e-a5ac-73ee29f00db7",
        "reply": "0193a5c0-7e00-8e12-8e34-ce6694e90c5f",
        "é:unicode": "0193a5c0-7e00-8e6e-a683-f033f4dc7a33",
    }
    assert {name: str(derived_id(saga, name)) for name in made_before} == made_before
    random_saga = uuid.UUID("5a6a0000-0000-4000-8000-000000000001")
    assert str(derived_id(random_saga, "reply")) == "5a6a0000-0000-8629-8ec4-bc87cb7821f7"
