"""The fly part of a raster: collect while the scan runs, pause at a row boundary, and end
an interrupted acquisition so that the run, the file and every reduction agree.

Pausing a fly scan (Ctrl-C, ``RE.request_pause``): the RunEngine calls ``pause()`` on
every staged device, and the scan generator holds at its next row boundary with the file
open and the detector armed; ``RE.resume()`` calls ``resume()`` and the scan goes on with
the next row. Nothing of the fly section is replayed on resume (``rewindable`` is off
there): a replayed ``collect`` would re-number stream datums, and a re-issued kickoff
would open a second file. Waits in this section are written so that a pause between a
request and its status only delays them (:func:`wait_status`); a ``checkpoint`` at every
flush lets a deferred pause (one Ctrl-C) take effect within a flush period.

Ending early (``RE.abort()``, ``RE.stop()``, a failure): :func:`end_acquisition` stops the
scan and the detector, waits for the IOC to close the file and announces the rows the
file holds, before the run is closed: the raw run then covers exactly the visited rows,
and the file's ``received`` map says which of their frames exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import bluesky.plan_stubs as bps
from bluesky.utils import FailedStatus, Msg, MsgGenerator

__all__ = ["collect_until_complete", "end_acquisition", "rewindable", "wait_status"]

logger = logging.getLogger(__name__)

# How long the end of an interrupted acquisition may take (the IOC closes its file).
END_TIMEOUT = 30.0


def _done_or_later(status, timeout: float | None) -> Callable[[], asyncio.Future]:
    """A future factory for ``wait_for``: resolves when ``status`` is done or after
    ``timeout`` s (never raises, so a timeout is not an error to the RunEngine)."""

    def factory() -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def resolve(*_):
            if not future.done():
                future.set_result(None)

        status.add_callback(lambda *_: loop.call_soon_threadsafe(resolve))
        if timeout is not None:
            loop.call_later(timeout, resolve)
        return future

    return factory


def _raise_if_failed(status) -> None:
    if status.done and not status.success:
        raise FailedStatus(status) from status.exception()


def wait_status(status, timeout: float | None = None) -> MsgGenerator[None]:
    """Wait for an ophyd status; a pause in between only delays the wait.

    Raises ``FailedStatus`` (cause: the device's error) if it failed, ``TimeoutError``
    after ``timeout`` s.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not status.done:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError(f"{status} not done after {timeout:g} s")
        yield Msg("wait_for", None, [_done_or_later(status, left)])
    _raise_if_failed(status)


def rewindable(flag: bool) -> MsgGenerator[None]:
    """Allow (True) or forbid (False) the RunEngine to replay messages on resume."""
    yield Msg("rewindable", None, bool(flag))


def collect_until_complete(detector, *, stream: str, flush_period: float) -> MsgGenerator[None]:
    """``complete`` the detector and announce its rows every ``flush_period`` s until it
    is done (bluesky's ``collect_while_completing``, pause-safe), then once more."""
    status = yield from bps.complete(detector, wait=False)
    while not status.done:
        yield from bps.checkpoint()  # where a deferred pause (one Ctrl-C) takes effect
        yield from bps.collect(detector, name=stream)
        yield Msg("wait_for", None, [_done_or_later(status, flush_period)])
    _raise_if_failed(status)
    yield from bps.collect(detector, name=stream)


def end_acquisition(detector, scan, *, stream: str) -> MsgGenerator[None]:
    """Stop the scan and the detector, wait for the file to close, announce its rows.

    Used while a run is being ended early (abort, stop, failure); every step reports its
    own error and goes on, so the error that ended the run stays its reason.
    """

    def attempt(what: str, plan: MsgGenerator) -> MsgGenerator[bool]:
        try:
            yield from plan
        except Exception as exc:
            logger.error("ending %s: %s failed: %s: %s", detector.name, what,
                         type(exc).__name__, exc)  # fmt: skip
            return False
        return True

    yield from attempt("stopping the scan", bps.stop(scan))
    yield from attempt("stopping the detector", bps.stop(detector))
    closed = yield from attempt("waiting for the file to close", _closed(detector))
    if closed:
        yield from attempt("announcing the last rows", bps.collect(detector, name=stream))


def _closed(detector) -> MsgGenerator[None]:
    status = yield from bps.complete(detector, wait=False)
    yield from wait_status(status, timeout=END_TIMEOUT)
