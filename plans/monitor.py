"""A device counter recorded as a monitor stream for one section of a plan.

The fly raster records the detector's dropped-frame counter
(``detector.hdf.dropped_frames``, ``HDF1:DroppedFrames_RBV``) while it acquires: bluesky's
``monitor`` emits an event in the stream ``{signal.name}_monitor`` (data key
``{signal.name}``, e.g. ``det_hdf_dropped_frames``) at once and then whenever the IOC
changes the value, so a callback (the progress bar) learns the dropped frames from the
documents alone.

The last value: the IOC writes the final count before it closes the file
(``Capture_RBV`` back to 0), but the monitor's event for it comes on another thread than
the plan's. :meth:`CounterMonitor.finish` reads the final count and waits until the
stream holds it (the plan watches its own run's events through a temporary RunEngine
subscription, which the RunEngine calls after every subscriber that was there before)
before it unmonitors.

Pause and resume: the RunEngine suspends every monitor while paused and restores it on
resume (the restored subscription emits the current value at once). A rewind would replay
the ``monitor`` message and fail (already monitored); the fly section is not rewindable,
so nothing is replayed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.utils import Msg, MsgGenerator, RequestAbort, RequestStop

__all__ = ["FINAL_TIMEOUT", "CounterMonitor"]

logger = logging.getLogger(__name__)

#: s a finished section waits for its counter's final value to be in the stream.
FINAL_TIMEOUT = 5.0
_NOTHING = object()


class CounterMonitor:
    """Monitor an integer counter signal during one section of a plan.

    Parameters
    ----------
    signal : ophyd signal
        The counter (e.g. ``detector.hdf.dropped_frames``).
    timeout : float
        s :meth:`finish` waits for the final value to be in the stream.

    Attributes
    ----------
    stream : str
        The stream's name: ``{signal.name}_monitor``.
    key : str
        The data key of its events: ``signal.name``.
    last : int or None
        The last value the stream holds (None before its first event).
    active : bool
        Whether the signal is monitored now.
    """

    def __init__(self, signal, *, timeout: float = FINAL_TIMEOUT):
        self.signal = signal
        self.key = signal.name
        self.stream = f"{signal.name}_monitor"
        self.timeout = float(timeout)
        self.active = False
        self._lock = threading.Lock()
        self._descriptor: str | None = None
        self._last: Any = _NOTHING
        self._token = None
        self._waiter: Callable[[], None] | None = None

    @property
    def last(self) -> int | None:
        """The last value in the stream (None before its first event)."""
        return None if self._last is _NOTHING else int(self._last)

    def _watch(self, name: str, doc: dict) -> None:
        # Called by the RunEngine for every document of the run (any thread).
        if name == "descriptor" and doc.get("name") == self.stream:
            self._descriptor = doc["uid"]
        elif name == "event" and doc.get("descriptor") == self._descriptor:
            with self._lock:
                self._last = doc["data"].get(self.key, self._last)
                waiter = self._waiter
            if waiter is not None:
                waiter()

    def start(self) -> MsgGenerator[None]:
        """Subscribe the plan's watcher, then monitor the signal (its current value is
        the stream's first event)."""
        self._descriptor, self._last = None, _NOTHING
        self._token = yield from bps.subscribe("all", self._watch)
        yield from bps.monitor(self.signal, name=self.stream)
        self.active = True

    def finish(self) -> MsgGenerator[None]:
        """Read the final value, wait until the stream holds it (up to ``timeout`` s),
        unmonitor and unsubscribe.

        A no-op when not monitoring. It also runs while a run is being ended early, so
        it reports (logs) a problem instead of raising; an abort or stop the RunEngine
        throws in meanwhile goes on (the plan's clean-up calls this again).
        """
        if not self.active:
            return
        liveness = getattr(self.signal.root, "liveness", None)
        try:
            why = liveness.lost(self.signal) if liveness is not None else None
            if why is not None:
                raise TimeoutError(why)  # not waited for (bluestem.devices.liveness)
            final = int(self.signal.get(use_monitor=False))
        except Exception as exc:
            logger.error("%s: final value unknown (%s: %s); not waiting for it",
                         self.key, type(exc).__name__, exc)  # fmt: skip
            final = None
        if final is not None:
            yield from self._wait_recorded(final)
            if self.last != final:
                logger.warning("%s: the stream %s holds %s, the final value is %s",
                               self.key, self.stream, self.last, final)  # fmt: skip
        try:
            yield from bps.unmonitor(self.signal)
        except (RequestAbort, RequestStop):
            raise
        except Exception as exc:  # e.g. no longer monitored: the run was closed
            logger.error("%s: unmonitor failed: %s: %s", self.key, type(exc).__name__, exc)
        self.active = False
        token, self._token = self._token, None
        if token is not None:
            try:
                yield from bps.unsubscribe(token)
            except (RequestAbort, RequestStop):
                raise
            except Exception as exc:
                logger.error("%s: unsubscribe failed: %s: %s", self.key,
                             type(exc).__name__, exc)  # fmt: skip

    def _wait_recorded(self, value: int) -> MsgGenerator[None]:
        deadline = time.monotonic() + self.timeout
        try:
            while self.last != value and (left := deadline - time.monotonic()) > 0:
                yield Msg("wait_for", None, [self._recorded(value, left)])
        finally:
            with self._lock:
                self._waiter = None

    def _recorded(self, value: int, timeout: float) -> Callable[[], asyncio.Future]:
        """A ``wait_for`` future factory: done when the stream holds ``value`` or after
        ``timeout`` s (never an error)."""

        def factory() -> asyncio.Future:
            loop = asyncio.get_running_loop()
            future = loop.create_future()

            def resolve() -> None:
                if not future.done():
                    future.set_result(None)

            def check() -> None:
                if self.last == value:
                    loop.call_soon_threadsafe(resolve)

            with self._lock:
                self._waiter = check
            check()
            loop.call_later(timeout, resolve)
            return future

        return factory
