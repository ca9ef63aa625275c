"""Acknowledge a consumer's deliveries in as few frames as the order of its batches allows.

A batch's deliveries are acknowledged once its transaction has committed. One frame per
delivery costs the process and the broker a frame each; AMQP's `multiple` ack settles every
unsettled delivery of the channel up to a tag in one. With several batches in flight a later
batch may commit first, so a `multiple` ack of its last tag could settle an earlier batch's
deliveries before their work is done. The ledger therefore holds each acknowledgement until
every delivery taken before it is settled (acknowledged through the ledger, or settled on its
own: parked, retried, given back), then sends one `multiple` ack for the run.

That is only safe when the ledger has taken every delivery of the channel, in the order of
their tags (a channel of its own, consumed in arrival order). It checks this as it takes them:
each channel's tags must run 1, 2, 3...; on any gap or reordering it logs once and from then
on acknowledges each delivery on its own.

The batch consumer keeps one ledger per channel and makes it the current one while a batch is
processed (`ack` finds it through a context variable); without one, `ack` acknowledges each
delivery on its own, as the one-by-one path and tests do.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Iterator, Sequence

from aio_pika.abc import AbstractIncomingMessage

log = logging.getLogger(__name__)

_current: contextvars.ContextVar[AckLedger | None] = contextvars.ContextVar(
    "sagaline_ack_ledger", default=None
)


class AckLedger:
    def __init__(self) -> None:
        self._taken: deque[AbstractIncomingMessage] = deque()
        """Deliveries in the order they were taken (the order of their tags), not yet passed."""
        self._in_hand: set[int] = set()
        """Ids of the deliveries whose batch is being processed."""
        self._acked: set[int] = set()
        """Ids of the deliveries acknowledged through the ledger while their batch is in hand,
        sent or not (a failing batch must not give them back: the broker would refuse an
        unknown tag by closing the channel)."""
        self._held: set[int] = set()
        """Ids of the deliveries acknowledged through the ledger and not yet sent."""
        self._sending = asyncio.Lock()
        """One flush at a time: a `multiple` ack sent after a later one would name a tag the
        broker no longer knows, which closes the channel."""
        self.in_order = True
        """Every delivery of each channel taken, tags in order; else each ack is sent alone."""
        self._channel: object = None
        self._tag = 0

    def take(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        for delivery in batch:
            self._check_order(delivery)
            self._in_hand.add(id(delivery))
        self._taken.extend(batch)

    def _check_order(self, delivery: AbstractIncomingMessage) -> None:
        if not self.in_order:
            return
        try:
            channel = delivery.channel
        except Exception:  # closed: none of its deliveries will be acknowledged
            return
        tag = delivery.delivery_tag or 0
        expected = self._tag + 1 if channel is self._channel else 1
        if tag != expected:
            self.in_order = False
            log.warning(
                "deliveries not taken in the order of their tags; acknowledging one by one",
                extra={"tag": tag, "expected": expected},
            )
        self._channel, self._tag = channel, tag

    def done(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        """The batch is out of hand (its deliveries stay in the ledger while held)."""
        for delivery in batch:
            key = id(delivery)
            self._in_hand.discard(key)
            if key not in self._held:
                self._acked.discard(key)

    def acked(self, delivery: AbstractIncomingMessage) -> bool:
        """Acknowledged through the ledger (sent, or held until earlier deliveries settle)."""
        return id(delivery) in self._acked

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        token = _current.set(self)
        try:
            yield
        finally:
            _current.reset(token)

    async def ack(self, deliveries: Sequence[AbstractIncomingMessage]) -> None:
        for delivery in deliveries:
            self._acked.add(id(delivery))
            self._held.add(id(delivery))
        await self.flush()

    async def flush(self) -> None:
        """Send one `multiple` ack for the longest settled run at the front."""
        async with self._sending:
            run: list[AbstractIncomingMessage] = []
            taken = self._taken
            while taken:
                first = taken[0]
                key = id(first)
                if key in self._held:
                    self._held.discard(key)
                    if key not in self._in_hand:
                        self._acked.discard(key)
                    run.append(first)
                elif not (first.processed or _channel_closed(first)):
                    break  # an earlier delivery still in hand: hold what follows
                taken.popleft()
            # A closed channel's deliveries come back from the broker (the inbox absorbs
            # them); their acks cannot be sent.
            run = [delivery for delivery in run if not _channel_closed(delivery)]
            if not run:
                return
            if self.in_order:
                await run[-1].ack(multiple=True)
            else:
                for delivery in run:
                    await delivery.ack()


def _channel_closed(delivery: AbstractIncomingMessage) -> bool:
    try:
        return bool(delivery.channel.is_closed)
    except Exception:  # aio-pika refuses to hand out a closed channel
        return True


async def ack(deliveries: Sequence[AbstractIncomingMessage]) -> None:
    """Acknowledge deliveries whose work has committed: through the current batch's ledger,
    else one by one."""
    ledger = _current.get()
    if ledger is None:
        for delivery in deliveries:
            await delivery.ack()
    else:
        await ledger.ack(deliveries)
