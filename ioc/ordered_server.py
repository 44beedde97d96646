"""A caproto server whose put-completion replies follow the monitor updates of the put.

An EPICS record posts its monitors while it processes and answers a put with completion
afterwards, on the same circuit, so a client that waited for the put and then reads a
monitored value sees the new value. caproto answers the put as soon as the write returns
and sends the monitor updates from another task a little later: a libca client (pyepics'
``caput(wait=True)`` then a monitored ``get``) then read the old value in 13 of 20 tries
on this machine. :class:`OrderedCircuit` restores the record's order: a
``WriteNotifyResponse`` waits until every update queued for the circuit before it has
been sent (at most :data:`ORDER_WAIT` s, so a stuck update loop cannot hold a put).
"""

from __future__ import annotations

import asyncio
import time

import caproto as ca
from caproto.asyncio.server import Context, VirtualCircuit

__all__ = ["ORDER_WAIT", "OrderedCircuit", "OrderedContext"]

#: Longest a put's completion waits for the updates before it (s).
ORDER_WAIT = 0.25


class _CountingQueue(asyncio.Queue):
    """The circuit's update queue, counting what was put in."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.put_count = 0

    def put_nowait(self, item):  # asyncio.Queue.put ends here too
        super().put_nowait(item)
        self.put_count += 1


class OrderedCircuit(VirtualCircuit):
    """A circuit that sends a put's completion after the updates the put caused."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.subscription_queue = _CountingQueue(ca.MAX_TOTAL_SUBSCRIPTION_BACKLOG)
        self._taken = 0  # updates the update loop took from the queue
        self._sent = 0  # of those, how many a batch has gone out after
        self._progress = asyncio.Event()

    async def get_from_sub_queue(self, timeout=None):
        if timeout is None and self._sent < self._taken:
            # The loop blocks only with its batch sent (or all of it expired).
            self._sent = self._taken
            self._progress.set()
        ref = await super().get_from_sub_queue(timeout)
        if ref is not None:
            self._taken += 1
        return ref

    async def send(self, *commands):
        replies = [c for c in commands if isinstance(c, ca.WriteNotifyResponse)]
        if replies:
            await self._after_updates()
        await super().send(*commands)
        # The update loop sends its batches (culled: possibly empty) of updates only.
        batch = not commands or any(isinstance(c, ca.EventAddResponse) for c in commands)
        if batch and self._sent < self._taken:
            self._sent = self._taken
            self._progress.set()

    async def _after_updates(self) -> None:
        """Until every update queued so far (this put's among them) has been sent."""
        deadline = time.monotonic() + ORDER_WAIT
        # The server-wide queue hands each update to the circuits in one step once it is
        # taken: when it is empty, every update of this put is in this circuit's queue.
        updates = self.context.subscription_queue
        while updates.qsize() and time.monotonic() < deadline:
            await asyncio.sleep(0)
        target = self.subscription_queue.put_count
        while self._sent < target:
            self._progress.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self._progress.wait(), left)
            except TimeoutError:
                return


class OrderedContext(Context):
    """:class:`caproto.asyncio.server.Context` with :class:`OrderedCircuit` circuits."""

    CircuitClass = OrderedCircuit
