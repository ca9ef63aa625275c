"""The sagas this process wrote last, so that a batch of replies to its own commands is decided
without reading them back first. No I/O: the store asks and tells it.

A batch's read is one of the two database round trips between an event's arrival and its
commands' publish. When every saga of a batch is one this process committed last (the reply to
a command it sent) or is being started, the batch can be decided from memory and written at
once: the write checks everything the read would have told (a saga moved meanwhile fails its
compare-and-swap, a message already recorded or a saga or business key already taken fails its
insert), and any such shortfall rolls the whole batch back. The store then forgets those sagas
and decides the batch again from a real read, so a stale entry costs one write, never a wrong
step. (`sagaline bench --only latency --latency-rate 500`, six interleaved pairs in a slow hour
on 2026-12-07: the read's 1.4-1.9 ms p50 gone, p99 ratio to the bare relay 3.26x against 4.40x
by the median; docs/benchmark-log.md.)

This holds as long as every change to a saga row bumps its version, as every path in sagaline
does (steps, operator commands, `sagaline saga migrate`); a tool that edits saga rows in place
must do the same, or turn the cache off while it runs.

Replicas compete for one queue, so a saga's next event often reaches another replica, and this
one's entry for it is then stale. The cache watches its own record: while fewer than
`MIN_HIT_RATE` of the recent guesses held, it stands aside (the batch reads, as without it) and
tries again only every `PROBE_EVERY` batches, so a deployment where it does not pay costs one
extra write in that many.

When it is full, a saga it does not hold yet takes the place of the entry written longest ago
only if that entry has not been written for `KEEP_FOR_SECONDS`; otherwise the newcomer is not
kept (its next batch reads, as without the cache). Evicting the oldest regardless would keep nothing
useful under a backlog: with more sagas in flight than entries, and every queue served in
order, the saga written longest ago is the one whose reply comes next. Kept this way, the
entries it holds keep hitting until their sagas finish or wait on something slower than a
worker (a person, a timer). (`sagaline bench --only e2e --e2e-orders 2000,30000`, 10,000
entries: with 30,000 orders in flight 40% of the batches were decided from memory, against
24% with the oldest evicted regardless; with 2,000, all of them. docs/benchmark-log.md,
2026-12-07 late.)

Each entry is kept as its row was written, the data and runtime as their JSON text, in a tuple
of plain values, and is decoded when a batch is guessed, as a read decodes its rows. Objects
(the snapshot, its data's dicts and lists, its runtime) are what the garbage collector walks
in every full collection; 10,000 of them kept as objects made the orchestrator's collections
take 20.4 s of a 196 s run against 8.8 s without the cache. Text also keeps an entry from
changing when the plan that made it goes on using its objects, and a guessed saga is the one
a read would have given.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

from orchestrator.engine import Incoming, RuntimeState, SagaSnapshot
from orchestrator.store.json_text import json_text

MIN_HIT_RATE = 0.9
RECENT = 100
"""How many recent guesses the hit rate is taken over."""
PROBE_EVERY = 50
"""While the hit rate is low: one guess in this many batches, to notice it recover."""
KEEP_FOR_SECONDS = 60.0
"""When full: an entry written more recently than this is not evicted for a newcomer. A reply
comes back within seconds; under a backlog it waits its turn in every queue, e.g. 30,000
orders in flight end to end on 2 cores put a saga's steps about 20-50 s apart (the sagas in
flight over the steps done per second, 650-1,800)."""


Entry = tuple[str, str, str, str, str, int, datetime | None, int, float]
"""workflow, business key, state, data and runtime as JSON text, version, updated_at,
definition version, and when it was written (on the clock `remember` is given). Only values
the garbage collector does not track: the tuple is untracked at its first collection."""


def _entry(snapshot: SagaSnapshot, written: float, texts: tuple[str, str] | None) -> Entry:
    """`texts`: the data and runtime as the write sent them (None: a saga it held unchanged)."""
    data, runtime = texts or (json_text(snapshot.data), json_text(snapshot.runtime.to_json()))
    return (
        snapshot.workflow,
        snapshot.business_key,
        snapshot.state,
        data,
        runtime,
        snapshot.version,
        snapshot.updated_at,
        snapshot.definition_version,
        written,
    )


def _snapshot(saga_id: uuid.UUID, entry: Entry) -> SagaSnapshot:
    workflow, business_key, state, data, runtime, version, updated_at, definition, _ = entry
    return SagaSnapshot(
        saga_id=saga_id,
        workflow=workflow,
        business_key=business_key,
        state=state,
        data=json.loads(data),
        runtime=RuntimeState.from_json(json.loads(runtime)),
        version=version,
        finished=False,
        updated_at=updated_at,
        definition_version=definition,
    )


class SnapshotCache:
    """Up to `size` sagas as this process last committed them, each with when it was written
    (in the order written: the entry written longest ago first)."""

    def __init__(
        self,
        size: int,
        observe: Callable[[bool], None] | None = None,
        keep_for: float = KEEP_FOR_SECONDS,
    ) -> None:
        self.size = size
        self.observe = observe
        """Told each guess's outcome (True: its write held), for the metrics."""
        self.keep_for = keep_for
        """Seconds, on the clock `remember` is given (the store gives `time.monotonic`)."""
        self._sagas: OrderedDict[uuid.UUID, Entry] = OrderedDict()
        self._recent: deque[bool] = deque(maxlen=RECENT)
        self._since_probe = 0

    def guess(
        self, incomings: Sequence[Incoming], start_keys: Sequence[tuple[str, str] | None]
    ) -> dict[uuid.UUID, SagaSnapshot] | None:
        """The batch's sagas by id when every one is cached or being started (then each
        message is taken as new and each start as unclaimed), or None: read them."""
        if self.size <= 0 or not self._worth_a_guess():
            return None
        sagas = self._sagas
        for incoming, start_key in zip(incomings, start_keys, strict=True):
            if start_key is None and incoming.saga_id not in sagas:
                return None  # before decoding any: one unknown saga and the batch reads
        return {
            i.saga_id: _snapshot(i.saga_id, sagas[i.saga_id])
            for i in incomings
            if i.saga_id in sagas
        }

    def held(self) -> None:
        """The write of a guessed batch went through."""
        self._recent.append(True)
        if self.observe is not None:
            self.observe(True)

    def missed(self, saga_ids: Iterable[uuid.UUID]) -> None:
        """The write of a guessed batch fell short: its sagas are read again from now on."""
        self._recent.append(False)
        self.forget(saga_ids)
        if self.observe is not None:
            self.observe(False)

    def remember(
        self,
        sagas: Iterable[tuple[uuid.UUID, SagaSnapshot | None]],
        written: float,
        texts: Mapping[uuid.UUID, tuple[str, str]] | None = None,
    ) -> None:
        """Sagas as a committed write left them at `written` (None or finished: nothing more to
        decide); `texts`: the data and runtime text the write sent, by saga, kept as they are
        (a saga missing from it is encoded here)."""
        known = texts or {}
        if self.size <= 0:
            return
        for saga_id, snapshot in sagas:
            kept = self._sagas.pop(saga_id, None) is not None
            if snapshot is None or snapshot.finished:
                continue
            if kept or len(self._sagas) < self.size or self._evict_stale(written):
                # Last in the order: written most recently.
                self._sagas[saga_id] = _entry(snapshot, written, known.get(saga_id))

    def _evict_stale(self, now: float) -> bool:
        """Make room by dropping the entry written longest ago, if it was `keep_for` ago."""
        oldest, entry = next(iter(self._sagas.items()))
        if now - entry[-1] < self.keep_for:
            return False
        del self._sagas[oldest]
        return True

    def forget(self, saga_ids: Iterable[uuid.UUID]) -> None:
        """Sagas whose stored state this process may not know (a write that is not yet
        committed, or a guess that failed)."""
        for saga_id in saga_ids:
            self._sagas.pop(saga_id, None)

    def __len__(self) -> int:
        return len(self._sagas)

    def _worth_a_guess(self) -> bool:
        if len(self._recent) < RECENT // 5 or self.hit_rate() >= MIN_HIT_RATE:
            self._since_probe = 0
            return True
        self._since_probe += 1
        if self._since_probe >= PROBE_EVERY:
            self._since_probe = 0
            return True
        return False

    def hit_rate(self) -> float:
        return sum(self._recent) / len(self._recent) if self._recent else 1.0
