"""The session's RunEngine: bluesky's, with a reason on every run that does not succeed.

bluesky records ``RE.abort()`` with the reason its caller gave (``""`` by default), a
halt and a refused pause with none, and ``RE.stop()`` (exit status ``success``) without
saying the run was cut short. An operator reading the catalogue later cannot tell an
abort at the console from a crash. This subclass fills in a reason whenever none was
given; the run's exit status is bluesky's own.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bluesky import RunEngine as _RunEngine
from bluesky.utils import FailedPause, PlanHalt, RequestAbort, RunEngineInterrupted

__all__ = ["ABORTED", "HALTED", "NOT_RESUMABLE", "STOPPED", "RunEngine"]

ABORTED = "aborted by the operator (RE.abort())"
STOPPED = "stopped early by the operator (RE.stop()); the data so far are kept"
HALTED = "halted (RE.halt(), or an interrupt forced a halt): the plan did not clean up"
NOT_RESUMABLE = "a pause was requested but this plan cannot be resumed: aborted"


logger = logging.getLogger(__name__)

# Interruptions an operator asked for: bluesky logs each with a full traceback ("Run
# aborted"), which at the console reads as a crash. Failures keep theirs.
_ASKED_FOR = (RequestAbort, PlanHalt, FailedPause, asyncio.CancelledError)


class _NoTracebackForRequests(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(getattr(record, "RE", None), RunEngine) and isinstance(exc, _ASKED_FOR):
            record.exc_info, record.exc_text = None, None
            record.msg = f"{record.msg} ({type(exc).__name__}: as requested)"
        return True


class RunEngine(_RunEngine):
    """bluesky's RunEngine; every run that is aborted, halted or stopped says why.

    Also: each call starts rewindable (a halted fly scan cannot leave replay switched off
    for the next plan), and an abort the operator asked for is logged without bluesky's
    traceback.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: Where each call is recorded (``record_attempt(dict)``: the session's journal).
        self.attempts = None
        self._opened: list[str] = []
        self.subscribe(lambda name, doc: self._opened.append(doc["uid"]), "start")
        log = logging.getLogger("bluesky")
        if not any(isinstance(f, _NoTracebackForRequests) for f in log.filters):
            log.addFilter(_NoTracebackForRequests())
        self.register_command("record_interruption", self._record_interruption)

    async def _record_interruption(self, msg) -> None:
        """``Msg("record_interruption", None, text)``: an event in the open runs'
        ``interruptions`` stream (bluesky records a suspension, not its end)."""
        for run in self._run_bundlers.values():
            run.record_interruption(str(msg.args[0]))

    def __call__(self, *args, **kwargs):
        if self.state == "idle":
            self.rewindable = True
        if self.attempts is None:
            return super().__call__(*args, **kwargs)
        plan = args[0] if args else kwargs.get("plan")
        name = getattr(plan, "__name__", type(plan).__name__)
        return self._recorded(name, lambda: super(RunEngine, self).__call__(*args, **kwargs))

    def resume(self):
        """Resume a paused plan (recorded as an attempt ``RE.resume()``)."""
        if self.attempts is None:
            return super().resume()
        return self._recorded("RE.resume()", super().resume)

    def _recorded(self, plan: str, call):
        self._opened = []
        t0 = time.time()
        try:
            result = call()
        except BaseException as exc:
            self._record(plan, t0, exc)
            raise
        self._record(plan, t0, None)
        return result

    def _record(self, plan: str, t0: float, exc: BaseException | None) -> None:
        """One line in the journal's attempts file; never hides the plan's own error."""
        outcome = "finished" if exc is None else "failed"
        if isinstance(exc, RunEngineInterrupted):
            outcome, exc = self.state, None  # paused: resume() goes on with it
        record = {
            "time": t0,
            "plan": plan,
            "outcome": outcome,
            "runs": list(self._opened),
            "seconds": round(time.time() - t0, 3),
        }
        if exc is not None:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            record["error"] = f"{type(cause).__name__}: {cause}"
            if not self._opened:
                record["note"] = "failed before any run opened: no run documents exist"
        try:
            self.attempts.record_attempt(record)
        except Exception as err:
            logger.error("could not record the attempt %s: %s", record, err)

    def abort(self, reason: str = ""):
        """Stop a running or paused plan, mark it aborted (``reason``: why; default
        says the operator aborted)."""
        return super().abort(reason or ABORTED)

    async def _stop_coro(self):
        result = await super()._stop_coro()
        self._reason = self._reason or STOPPED
        return result

    async def _halt_coro(self):
        result = await super()._halt_coro()
        self._reason = self._reason or HALTED
        return result

    async def _request_pause_coro(self, defer=False):
        if not defer and not self.resumable:
            self._reason = self._reason or NOT_RESUMABLE
        return await super()._request_pause_coro(defer)
