"""The baseline stream (devices read before and after every run) that never replaces the
error which ended a run.

bluesky's ``SupplementalData(baseline=...)`` reads the baseline devices again just before
``close_run``. When the run failed because an IOC died, that read fails too (the
microscope lives in the same IOC) and its error, not the first one, becomes the run's
reason: "mic_high_tension is not connected" instead of the detector that was lost. Here
the closing read reports its own failure and lets the run close with its reason.
"""

from __future__ import annotations

import contextlib
import logging

import bluesky.plan_stubs as bps
from bluesky.preprocessors import plan_mutator, set_run_key_wrapper
from bluesky.utils import Msg, MsgGenerator

__all__ = ["Baseline", "baseline_wrapper"]

logger = logging.getLogger(__name__)


def _lost(device) -> str | None:
    liveness = getattr(device, "liveness", None)
    return liveness.lost_device(device) if liveness is not None else None


def baseline_wrapper(plan, devices, name: str = "baseline") -> MsgGenerator:
    """Read ``devices`` into stream ``name`` after ``open_run`` and before ``close_run``.

    The opening read fails the run like any other error. The closing read is reported
    and skipped if it fails; a run that was otherwise successful then closes with a
    ``reason`` saying the closing baseline is missing.
    """
    devices = list(devices)

    def head():
        yield from bps.declare_stream(*devices, name=name)
        yield from bps.trigger_and_read(devices, name=name)

    def tail() -> MsgGenerator[str]:
        # A device whose IOC stopped answering during the run is not read again: each
        # of its signals would wait out its own timeout (bluestem.devices.liveness).
        lost = [f"{d.name}: {why}" for d in devices
                if (why := _lost(d)) is not None]  # fmt: skip
        if lost:
            why = "; ".join(lost)
            logger.warning("the %s after the run was not read: %s", name, why)
            return why
        try:
            yield from bps.trigger_and_read(devices, name=name)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            logger.warning("the %s after the run was not read: %s", name, why)
            with contextlib.suppress(Exception):  # not bundling: nothing to drop
                yield Msg("drop")  # the event bundle a failed read left open
            return why
        return ""

    def keyed(gen, run):
        return set_run_key_wrapper(gen, run) if run is not None else gen

    def insert(msg):
        if msg.command == "open_run":
            return None, keyed(head(), msg.run)
        if msg.command == "close_run":

            def post():
                failed = yield from keyed(tail(), msg.run)
                if failed and msg.kwargs.get("exit_status") in (None, "success"):
                    # The same message (a new one would be mutated again, endlessly).
                    msg.kwargs["reason"] = f"the {name} after the run was not read ({failed})"
                return (yield msg)

            return post(), None
        return None, None

    return (yield from plan_mutator(plan, insert))


class Baseline:
    """A RunEngine preprocessor: ``RE.preprocessors.append(Baseline([mic]))``.

    Parameters
    ----------
    baseline : list of devices
        Read before and after every run (stream ``baseline``).
    """

    def __init__(self, baseline):
        self.baseline = list(baseline)
        if not self.baseline:
            raise ValueError("Baseline(): allowed one or more devices, got none")

    def __call__(self, plan):
        return baseline_wrapper(plan, self.baseline)
