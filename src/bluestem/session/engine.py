"""The session's RunEngine: bluesky's, with a reason on every run that does not succeed.

bluesky records ``RE.abort()`` with the reason its caller gave (``""`` by default), a
halt and a refused pause with none, and ``RE.stop()`` (exit status ``success``) without
saying the run was cut short. An operator reading the catalogue later cannot tell an
abort at the console from a crash. This subclass fills in a reason whenever none was
given; the run's exit status is bluesky's own.
"""

from __future__ import annotations

from bluesky import RunEngine as _RunEngine

__all__ = ["ABORTED", "HALTED", "NOT_RESUMABLE", "STOPPED", "RunEngine"]

ABORTED = "aborted by the operator (RE.abort())"
STOPPED = "stopped early by the operator (RE.stop()); the data so far are kept"
HALTED = "halted (RE.halt(), or an interrupt forced a halt): the plan did not clean up"
NOT_RESUMABLE = "a pause was requested but this plan cannot be resumed: aborted"


class RunEngine(_RunEngine):
    """bluesky's RunEngine; every run that is aborted, halted or stopped says why.

    Also: each call starts rewindable (a halted fly scan cannot leave replay switched off
    for the next plan).
    """

    def __call__(self, *args, **kwargs):
        if self.state == "idle":
            self.rewindable = True
        return super().__call__(*args, **kwargs)

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
