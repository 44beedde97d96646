"""The scan generator: ``PFX:SCAN:``."""

from __future__ import annotations

import math

from caproto.server import pvproperty

from .settings import SettingsGroup, long_string, readback, setting, trigger
from .validation import MAX_SCAN, InvalidSetting, Limits

__all__ = ["SCAN_STATES", "ScanGenerator"]

SCAN_STATES = ("Idle", "Running", "Done", "Aborted", "Fault", "Paused")
SHAPE = Limits(1, MAX_SCAN, integer=True)
POSITIVE_NM = Limits(0.0, 1e7, low_open=True)


class ScanGenerator(SettingsGroup):
    """The probe scan (prefix ``SCAN:``).

    PVs (each setting with an ``_RBV``): ShapeX, ShapeY (positions), StepX, StepY (nm),
    FovX, FovY (nm; writing a field of view sets Step = Fov / Shape, writing a step or a
    shape sets Fov = Step × Shape), Dwell (s), Rotation (deg), Flyback (s per row), Mode
    (Fly/Step), BeamX, BeamY (nm, beam position in step mode and for internally triggered
    series), Pause (1 holds a running scan at the next row boundary, file open and detector
    armed; 0 goes on with the next row; a scan started while 1 holds before its first row);
    busy-free triggers Start, Stop, Abort (both end a held scan too); read-only State_RBV
    (Idle/Running/Done/Aborted/Fault/Paused), Progress_RBV (%), FramesDone_RBV,
    StatusMessage_RBV.
    """

    message_attr = "message"

    shape_x, shape_x_rbv = setting("ShapeX", 16, "Scan positions along x.", limits=SHAPE)
    shape_y, shape_y_rbv = setting("ShapeY", 16, "Scan positions along y.", limits=SHAPE)
    step_x, step_x_rbv = setting("StepX", 0.2, "Scan step along x.", units="nm",
                                 limits=POSITIVE_NM)  # fmt: skip
    step_y, step_y_rbv = setting("StepY", 0.2, "Scan step along y.", units="nm",
                                 limits=POSITIVE_NM)  # fmt: skip
    fov_x, fov_x_rbv = setting("FovX", 3.2, "Field of view along x.", units="nm",
                               limits=POSITIVE_NM)  # fmt: skip
    fov_y, fov_y_rbv = setting("FovY", 3.2, "Field of view along y.", units="nm",
                               limits=POSITIVE_NM)  # fmt: skip
    dwell, dwell_rbv = setting(
        "Dwell", 1e-3, "Dwell time per position.", units="s",
        limits=Limits(0.0, 1.0, low_open=True), precision=7,
    )  # fmt: skip
    rotation, rotation_rbv = setting(
        "Rotation", 0.0, "Scan rotation (scan x w.r.t. specimen x).", units="deg",
        limits=Limits(-360.0, 360.0), quantum=0.01,
    )  # fmt: skip
    flyback, flyback_rbv = setting(
        "Flyback", 0.0, "Settling time at the start of each row.", units="s",
        limits=Limits(0.0, 1.0), precision=7,
    )  # fmt: skip
    mode, mode_rbv = setting("Mode", "Fly", "Scan mode.", enum_strings=("Fly", "Step"))
    beam_x, beam_x_rbv = setting(
        "BeamX", 0.0, "Beam x from the scan centre (step mode).", units="nm",
        limits=Limits(-1e7, 1e7), quantum=0.001,
    )  # fmt: skip
    beam_y, beam_y_rbv = setting(
        "BeamY", 0.0, "Beam y from the scan centre (step mode).", units="nm",
        limits=Limits(-1e7, 1e7), quantum=0.001,
    )  # fmt: skip
    pause, pause_rbv = setting(
        "Pause", 0, "1 holds the scan at the next row boundary; 0 goes on.",
        limits=Limits(0, 1, integer=True), live=True,
    )  # fmt: skip
    start = trigger("Start", "Write 1 to run the scan (returns at once).", "start_scan")
    stop = trigger("Stop", "Write 1 to end the scan early, keeping what was written.", "stop_scan")
    abort = trigger("Abort", "Write 1 to abort: ends early, State_RBV becomes Aborted.",
                    "abort_scan")  # fmt: skip
    state = readback("State_RBV", "Idle", "Scan state.", enum_strings=SCAN_STATES)
    progress = readback("Progress_RBV", 0.0, "Scan progress.", units="%")
    frames_done = pvproperty(
        name="FramesDone_RBV", value=0, read_only=True, doc="Positions visited in this scan."
    )
    message = long_string(
        "StatusMessage_RBV", "", "Last refused scan write or scan error.", read_only=True
    )

    async def setting_changed(self, spec, value) -> None:
        name = spec.name
        axis = name[-1]
        if name in ("StepX", "StepY", "FovX", "FovY", "ShapeX", "ShapeY"):
            shape = value if name.startswith("Shape") else self.rbv(f"Shape{axis}").value
            if name.startswith("Fov"):
                step = value / shape
                if not step > 0:
                    raise InvalidSetting(self.pv(name).pvname, f"{value} gives a zero step")
            elif name.startswith("Step"):
                step = value
            else:
                step = self.rbv(f"Step{axis}").value
            fov = step * shape
            await self.rbv(f"Shape{axis}").write(int(shape))
            for pv_name, v in ((f"Step{axis}", step), (f"Fov{axis}", fov)):
                if pv_name != name:
                    await self.pv(pv_name).write(v, verify_value=False)
                await self.rbv(pv_name).write(v)
            return
        await super().setting_changed(spec, value)
        if name == "Pause":
            self.root.hold_scan(bool(value))

    async def start_scan(self, instance) -> None:
        await self.root.start_scan()

    async def stop_scan(self, instance) -> None:
        await self.root.stop_scan(abort=False)

    async def abort_scan(self, instance) -> None:
        await self.root.stop_scan(abort=True)

    def geometry(self) -> dict:
        """The scan as read back, in SI units (the twin's ``ScanGeometry`` fields)."""
        return {
            "shape": (int(self.shape_y_rbv.value), int(self.shape_x_rbv.value)),
            "step": (self.step_y_rbv.value * 1e-9, self.step_x_rbv.value * 1e-9),
            "rotation": math.radians(self.rotation_rbv.value),
            "flyback": float(self.flyback_rbv.value),
        }

    def beam_position(self) -> tuple[float, float]:
        """Beam position (y, x) in metres from the scan centre."""
        return (self.beam_y_rbv.value * 1e-9, self.beam_x_rbv.value * 1e-9)
