"""The snapshot cache's rules: when a batch may be guessed, what is kept, when it stands aside."""

from __future__ import annotations

import gc
import uuid
from datetime import UTC, datetime

from orchestrator.engine import Incoming, RuntimeState, SagaSnapshot
from orchestrator.store.snapshot_cache import (
    KEEP_FOR_SECONDS,
    MIN_HIT_RATE,
    PROBE_EVERY,
    RECENT,
    SnapshotCache,
)

START_KEY = ("order", "order-1")


def snapshot(saga_id: uuid.UUID, *, finished: bool = False) -> SagaSnapshot:
    return SagaSnapshot(
        saga_id=saga_id,
        workflow="order",
        business_key=f"order-{saga_id}",
        state="awaiting_payment",
        data={},
        runtime=RuntimeState(),
        version=1,
        finished=finished,
    )


def incoming(saga_id: uuid.UUID) -> Incoming:
    return Incoming.timer(saga_id, "step-timeout", uuid.uuid4())


def test_a_batch_is_guessed_only_when_every_saga_is_known_or_starting() -> None:
    cache = SnapshotCache(10)
    known, unknown, starting = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.remember([(known, snapshot(known))], 0.0)
    guessed = cache.guess([incoming(known), incoming(starting)], [None, START_KEY])
    assert guessed == {known: snapshot(known)}
    assert cache.guess([incoming(known), incoming(unknown)], [None, None]) is None


def test_finished_and_vanished_sagas_are_not_kept_and_the_oldest_stale_entry_goes_first() -> None:
    cache = SnapshotCache(2)
    first, second, third, done = (uuid.uuid4() for _ in range(4))
    cache.remember([(first, snapshot(first)), (second, snapshot(second))], 0.0)
    cache.remember([(first, snapshot(first))], 1.0)  # written again: now the newest
    later = KEEP_FOR_SECONDS
    cache.remember([(third, snapshot(third)), (done, snapshot(done, finished=True))], later)
    assert cache.guess([incoming(second)], [None]) is None  # the oldest went
    assert cache.guess([incoming(done)], [None]) is None
    assert set(cache.guess([incoming(first), incoming(third)], [None, None]) or {}) == {
        first,
        third,
    }
    cache.remember([(third, None)], later)
    assert len(cache) == 1


def test_when_full_a_newcomer_waits_until_the_oldest_entry_is_stale() -> None:
    # Under a backlog the saga written longest ago is the one whose reply comes next: keeping
    # it (and not the newcomer) is what lets the cache hit at all.
    cache = SnapshotCache(2, keep_for=60.0)
    first, second, newcomer = (uuid.uuid4() for _ in range(3))
    cache.remember([(first, snapshot(first)), (second, snapshot(second))], 100.0)

    cache.remember([(newcomer, snapshot(newcomer))], 159.0)
    assert cache.guess([incoming(newcomer)], [None]) is None
    assert cache.guess([incoming(first), incoming(second)], [None, None]) is not None

    cache.remember([(first, snapshot(first))], 159.5)  # a held saga is always written again
    cache.remember([(newcomer, snapshot(newcomer))], 160.0)  # `second`: 60 s unwritten
    assert cache.guess([incoming(second)], [None]) is None
    assert set(cache.guess([incoming(first), incoming(newcomer)], [None, None]) or {}) == {
        first,
        newcomer,
    }


def test_a_miss_forgets_the_batchs_sagas() -> None:
    cache = SnapshotCache(10)
    saga = uuid.uuid4()
    cache.remember([(saga, snapshot(saga))], 0.0)
    cache.missed([saga])
    assert cache.guess([incoming(saga)], [None]) is None


def test_it_stands_aside_while_guesses_miss_and_probes_now_and_then() -> None:
    cache = SnapshotCache(10)
    starting = [incoming(uuid.uuid4())]
    for _ in range(RECENT // 5):  # enough of a record to judge by
        assert cache.guess(starting, [START_KEY]) is not None
        cache.missed([])
    assert cache.hit_rate() < MIN_HIT_RATE
    answers = [cache.guess(starting, [START_KEY]) for _ in range(PROBE_EVERY * 3)]
    assert sum(answer is not None for answer in answers) == 3  # one probe in PROBE_EVERY


def test_it_keeps_guessing_while_guesses_hold() -> None:
    cache = SnapshotCache(10)
    starting = [incoming(uuid.uuid4())]
    for _ in range(RECENT * 2):
        assert cache.guess(starting, [START_KEY]) is not None
        cache.held()


def test_size_zero_never_guesses() -> None:
    cache = SnapshotCache(0)
    saga = uuid.uuid4()
    cache.remember([(saga, snapshot(saga))], 0.0)
    assert len(cache) == 0
    assert cache.guess([incoming(saga)], [START_KEY]) is None


def test_each_guess_outcome_is_told_to_the_metrics() -> None:
    outcomes: list[bool] = []
    cache = SnapshotCache(10, outcomes.append)
    cache.held()
    cache.missed([uuid.uuid4()])
    assert outcomes == [True, False]


def test_a_guessed_saga_is_what_was_written_not_the_objects_that_went_on() -> None:
    cache = SnapshotCache(10)
    saga = uuid.uuid4()
    command = uuid.uuid4()
    written = SagaSnapshot(
        saga_id=saga,
        workflow="order",
        business_key="order-1",
        state="awaiting_payment",
        data={"lines": [{"sku": "sku-1", "quantity": 2}], "payment_id": None},
        runtime=RuntimeState(outstanding=frozenset({command}), reason="why"),
        version=3,
        finished=False,
        updated_at=datetime(2026, 12, 7, 22, 40, tzinfo=UTC),
        definition_version=2,
    )
    cache.remember([(saga, written)], 0.0)
    written.data["lines"][0]["quantity"] = 5  # the plan's objects live on after its write

    guessed = (cache.guess([incoming(saga)], [None]) or {})[saga]

    assert guessed.data == {"lines": [{"sku": "sku-1", "quantity": 2}], "payment_id": None}
    assert (guessed.runtime, guessed.version, guessed.updated_at) == (
        written.runtime,
        3,
        written.updated_at,
    )
    assert (guessed.workflow, guessed.business_key, guessed.definition_version) == (
        "order",
        "order-1",
        2,
    )


def test_a_saga_is_kept_as_the_text_the_write_sent() -> None:
    cache = SnapshotCache(10)
    sent, held = uuid.uuid4(), uuid.uuid4()
    # The write's text and the snapshot agree in use; here they differ, to see which is kept.
    text = ('{"sent": true}', '{"outstanding": [], "reason": "sent"}')

    cache.remember([(sent, snapshot(sent)), (held, snapshot(held))], 0.0, {sent: text})

    guessed = cache.guess([incoming(sent), incoming(held)], [None, None]) or {}
    assert guessed[sent].data == {"sent": True}
    assert guessed[sent].runtime.reason == "sent"
    assert guessed[held] == snapshot(held)  # not in the write's texts: encoded from the saga


def test_entries_hold_nothing_the_garbage_collector_walks() -> None:
    # Every full collection walks each tracked object; 10,000 snapshots kept as objects made
    # the orchestrator's collections 2.3x longer in a 30,000-order run.
    cache = SnapshotCache(100)
    sagas = [uuid.uuid4() for _ in range(50)]
    cache.remember([(saga, snapshot(saga)) for saga in sagas], 0.0)
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in cache._sagas.values())
