"""The scan generator: geometry settings (verified), start/stop/abort, progress."""

from __future__ import annotations

import logging

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Kind

from bluestem.instrument import ScanState

from .liveness import Liveness
from .put_errors import CheckedSignal, put_checked
from .text import TextSignalRO
from .verified import VerifiedEnum, VerifiedSetting

logger = logging.getLogger(__name__)

__all__ = ["ScanGenerator"]

# Steps and fields of view are coupled in the hardware (Fov = Step × Shape), so their
# readbacks are products of floats: a relative tolerance.
_RTOL = 1e-9


class ScanGenerator(Device):
    """Beam scan generator (``PFX:SCAN:``).

    Geometry settings are :class:`~bluestem.devices.verified.VerifiedSetting` and live in
    the configuration (they describe the scan, they do not change during it); state,
    progress and frames done are read. Units: nm, s, deg.

    Writing a shape keeps the step (the field of view follows); writing a field of view
    sets the step. Set the shape first.

    Pause and resume (the RunEngine calls :meth:`pause` / :meth:`resume` on every device a
    plan staged): the scan holds at its next row boundary with the detector armed and the
    file open (``SCAN:Pause``), and goes on with the next row. :meth:`stop` ends a running
    or held scan (pause/abort of a plan, and :meth:`unstage`, which the RunEngine calls
    even when a plan is halted).
    """

    shape_x = Cpt(VerifiedSetting, "ShapeX", kind=Kind.config)
    shape_y = Cpt(VerifiedSetting, "ShapeY", kind=Kind.config)
    step_x = Cpt(VerifiedSetting, "StepX", rtol=_RTOL, kind=Kind.config)
    step_y = Cpt(VerifiedSetting, "StepY", rtol=_RTOL, kind=Kind.config)
    fov_x = Cpt(VerifiedSetting, "FovX", rtol=_RTOL, kind=Kind.config)
    fov_y = Cpt(VerifiedSetting, "FovY", rtol=_RTOL, kind=Kind.config)
    dwell = Cpt(VerifiedSetting, "Dwell", rtol=_RTOL, kind=Kind.config)
    rotation = Cpt(VerifiedSetting, "Rotation", atol=0.01 * 0.501, kind=Kind.config)
    flyback = Cpt(VerifiedSetting, "Flyback", rtol=_RTOL, kind=Kind.config)
    mode = Cpt(VerifiedEnum, "Mode", kind=Kind.config)
    beam_x = Cpt(VerifiedSetting, "BeamX", atol=0.001 * 0.501)
    beam_y = Cpt(VerifiedSetting, "BeamY", atol=0.001 * 0.501)
    # The scan centre on the specimen (SCAN:OffsetX/Y, nm): part of the scan's description.
    offset_x = Cpt(VerifiedSetting, "OffsetX", atol=0.001 * 0.501, kind=Kind.config)
    offset_y = Cpt(VerifiedSetting, "OffsetY", atol=0.001 * 0.501, kind=Kind.config)

    hold = Cpt(EpicsSignal, "Pause", kind=Kind.omitted)
    start = Cpt(CheckedSignal, "Start", kind=Kind.omitted)
    stop_scan = Cpt(EpicsSignal, "Stop", kind=Kind.omitted)
    abort = Cpt(EpicsSignal, "Abort", kind=Kind.omitted)
    state = Cpt(TextSignalRO, "State_RBV", kind=Kind.normal)
    progress = Cpt(EpicsSignalRO, "Progress_RBV", kind=Kind.omitted)
    frames_done = Cpt(EpicsSignalRO, "FramesDone_RBV", kind=Kind.omitted)
    message = Cpt(TextSignalRO, "StatusMessage_RBV", kind=Kind.omitted)

    def geometry(self) -> dict:
        """The scan as read back: shape (ny, nx), step, fov and centre offset (dy, dx) in
        nm, rotation in deg, flyback and dwell in s, mode."""
        return {
            "shape": [int(self.shape_y.get()), int(self.shape_x.get())],
            "step": [float(self.step_y.get()), float(self.step_x.get())],
            "fov": [float(self.fov_y.get()), float(self.fov_x.get())],
            "offset": [float(self.offset_y.get()), float(self.offset_x.get())],
            "rotation": float(self.rotation.get()),
            "flyback": float(self.flyback.get()),
            "dwell": float(self.dwell.get()),
            "mode": str(self.mode.get()),
            "units": {
                "step": "nm",
                "fov": "nm",
                "offset": "nm",
                "rotation": "deg",
                "flyback": "s",
                "dwell": "s",
            },
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: The CA servers taken as not answering (shared by a session's devices).
        self.liveness = Liveness()

    def _put(self, signal, value, what: str) -> None:
        # Called from the RunEngine's pause/stop/unstage paths: report, never raise, so
        # one unreachable IOC does not hide the error that ended the run.
        why = self.liveness.lost(signal)
        if why is not None:
            logger.error("%s: not trying to %s the scan: %s", self.name, what, why)
            return
        try:
            if self.connected:
                put_checked(signal, value, timeout=5.0)
        except Exception as exc:
            self.liveness.mark(signal, exc)
            logger.error("%s: could not %s the scan: %s", self.name, what, exc)

    def pause(self) -> None:
        """Hold the scan at its next row boundary (SCAN:Pause = 1)."""
        self._put(self.hold, 1, "hold")

    def resume(self) -> None:
        """Go on with the next row (SCAN:Pause = 0)."""
        self._put(self.hold, 0, "resume")

    def stop(self, *, success: bool = False) -> None:
        """End a running or held scan early (keeps every frame already taken)."""
        try:
            why = self.liveness.lost(self.state)
            if why is not None:
                raise TimeoutError(why)
            running = self.connected and self.state.get(use_monitor=False) in (
                ScanState.RUNNING,
                ScanState.PAUSED,
            )
        except Exception as exc:
            self.liveness.mark(self.state, exc)
            logger.error("%s: scan state unknown (%s); sending Stop", self.name, exc)
            running = True
        if running:
            self._put(self.stop_scan, 1, "stop")
        self._put(self.hold, 0, "release")

    def stage(self) -> list:
        """A scan of this plan starts unheld, whatever an earlier session left (every
        CA server is tried again)."""
        self.liveness.clear()
        self._put(self.hold, 0, "release")
        return super().stage()

    def unstage(self) -> list:
        """End a scan the plan left running (also after a halt), then unstage."""
        self.stop()
        return super().unstage()
