"""The scan generator: ``PFX:SCAN:``."""

from __future__ import annotations

import math

from caproto.server import pvproperty

from bluestem.instrument import DWELL_MAX, ScanMode, ScanState, names

from .settings import LONG_STRING, SettingsGroup, long_string, readback, setting, trigger
from .status import wire_text
from .validation import MAX_SCAN, InvalidSetting, Limits

__all__ = ["ScanGenerator"]

SHAPE = Limits(1, MAX_SCAN, integer=True)
POSITIVE_NM = Limits(0.0, 1e7, low_open=True)
OFFSET_NM = Limits(-1e7, 1e7)


class ScanGenerator(SettingsGroup):
    """The probe scan (prefix ``SCAN:``).

    PVs (each setting with an ``_RBV``): ShapeX, ShapeY (positions), StepX, StepY (nm),
    FovX, FovY (nm; writing a field of view sets Step = Fov / Shape, writing a step or a
    shape sets Fov = Step × Shape), Dwell (s), Rotation (deg), Flyback (s per row), Mode
    (Fly/Step), OffsetX, OffsetY (nm, the scan centre on the specimen: a positive OffsetX
    moves the scan +x; not rotated with the scan), BeamX, BeamY (nm from the scan centre:
    beam position in step mode and for internally triggered series), Pause (1 holds a
    running scan at the next row boundary, file open and detector armed; 0 goes on with
    the next row; a scan started while 1 holds before its first row); busy-free triggers
    Start, Stop, Abort (both end a held scan too); read-only State_RBV
    (Idle/Running/Done/Aborted/Fault/Paused), Progress_RBV (%), FramesDone_RBV,
    StatusMessage_RBV.

    The instrument tells it what happened with :meth:`running`, :meth:`progress`,
    :meth:`held` and :meth:`finished`.
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

    # Per axis, Fov = Step x Shape: writing one of the three sets the others.
    @shape_x.applies
    async def shape_x(self, setting, value) -> None:
        await self._couple("X", shape=value)

    @shape_y.applies
    async def shape_y(self, setting, value) -> None:
        await self._couple("Y", shape=value)

    @step_x.applies
    async def step_x(self, setting, value) -> None:
        await self._couple("X", step=value)

    @step_y.applies
    async def step_y(self, setting, value) -> None:
        await self._couple("Y", step=value)

    @fov_x.applies
    async def fov_x(self, setting, value) -> None:
        await self._couple("X", fov=value)

    @fov_y.applies
    async def fov_y(self, setting, value) -> None:
        await self._couple("Y", fov=value)

    async def _couple(self, axis: str, *, shape=None, step=None, fov=None) -> None:
        """One of Shape, Step, Fov of ``axis`` was written: Step = Fov / Shape for a field
        of view, else Fov = Step x Shape; every readback and the other setpoints follow."""
        written = "Shape" if shape is not None else "Step" if step is not None else "Fov"
        if shape is None:
            shape = self.rbv(f"Shape{axis}").value
        if fov is not None:
            step = fov / shape
            if not step > 0:
                raise InvalidSetting(self.pv(f"Fov{axis}").pvname, f"{fov} gives a zero step")
        elif step is None:
            step = self.rbv(f"Step{axis}").value
        fov = step * shape
        await self.rbv(f"Shape{axis}").write(int(shape))
        for name, v in (("Step", step), ("Fov", fov)):
            if name != written:
                await self.pv(f"{name}{axis}").write(v, verify_value=False)
            await self.rbv(f"{name}{axis}").write(v)

    dwell, dwell_rbv = setting(
        "Dwell", 1e-3, "Dwell time per position.", units="s",
        limits=Limits(0.0, DWELL_MAX, low_open=True), precision=7,
    )  # fmt: skip
    rotation, rotation_rbv = setting(
        "Rotation", 0.0, "Scan rotation (scan x w.r.t. specimen x).", units="deg",
        limits=Limits(-360.0, 360.0), quantum=0.01,
    )  # fmt: skip
    flyback, flyback_rbv = setting(
        "Flyback", 0.0, "Settling time at the start of each row.", units="s",
        limits=Limits(0.0, 1.0), precision=7,
    )  # fmt: skip
    mode, mode_rbv = setting("Mode", ScanMode.FLY, "Scan mode.", enum_strings=names(ScanMode))
    offset_x, offset_x_rbv = setting(
        "OffsetX", 0.0, "Scan centre x on the specimen (positive moves the scan +x).",
        units="nm", limits=OFFSET_NM, quantum=0.001,
    )  # fmt: skip
    offset_y, offset_y_rbv = setting(
        "OffsetY", 0.0, "Scan centre y on the specimen (positive moves the scan +y).",
        units="nm", limits=OFFSET_NM, quantum=0.001,
    )  # fmt: skip
    beam_x, beam_x_rbv = setting(
        "BeamX", 0.0, "Beam x from the scan centre (step mode).", units="nm",
        limits=OFFSET_NM, quantum=0.001,
    )  # fmt: skip
    beam_y, beam_y_rbv = setting(
        "BeamY", 0.0, "Beam y from the scan centre (step mode).", units="nm",
        limits=OFFSET_NM, quantum=0.001,
    )  # fmt: skip
    pause, pause_rbv = setting(
        "Pause", 0, "1 holds the scan at the next row boundary; 0 goes on.",
        limits=Limits(0, 1, integer=True), live=True,
    )  # fmt: skip

    @pause.applies
    async def pause(self, setting, value) -> None:
        await self.read_back(setting, value)
        self.control.hold_scan(bool(value))

    start = trigger("Start", "Write 1 to run the scan (returns at once).")
    stop = trigger("Stop", "Write 1 to end the scan early, keeping what was written.")
    abort = trigger("Abort", "Write 1 to abort: ends early, State_RBV becomes Aborted.")

    @start.fires
    async def start(self) -> None:
        await self.control.start_scan()

    @stop.fires
    async def stop(self) -> None:
        await self.control.stop_scan(abort=False)

    @abort.fires
    async def abort(self) -> None:
        await self.control.stop_scan(abort=True)

    state = readback("State_RBV", ScanState.IDLE, "Scan state.", enum_strings=names(ScanState))
    progress_rbv = readback("Progress_RBV", 0.0, "Scan progress.", units="%")
    frames_done = pvproperty(
        name="FramesDone_RBV", value=0, read_only=True, doc="Positions visited in this scan."
    )
    message = long_string(
        "StatusMessage_RBV", "", "Last refused scan write or scan error.", read_only=True
    )

    # -- what happened (called by the instrument) -----------------------------------------
    async def running(self) -> None:
        """A scan started: Running, no progress yet."""
        await self.state.write(ScanState.RUNNING.value)
        await self.progress_rbv.write(0.0)
        await self.frames_done.write(0)

    async def progress(self, percent: float, visited: int) -> None:
        """The beam visited ``visited`` positions (``percent`` of the scan)."""
        await self.progress_rbv.write(round(percent, 2))
        await self.frames_done.write(visited)

    async def held(self, on: bool) -> None:
        """A running scan is held at a row boundary (``on``) or goes on."""
        state = ScanState.PAUSED if on else ScanState.RUNNING
        if self.state.value != state:
            await self.state.write(state.value)

    async def finished(self, state: ScanState, text: str) -> None:
        """The scan ended in ``state`` (Done, Aborted or Fault); ``text`` says how."""
        await self.state.write(state.value)
        await self.message.write(wire_text(text, LONG_STRING - 1))

    # -- what the instrument reads --------------------------------------------------------
    def dwell_time(self) -> float:
        """Dwell per position read back, in s."""
        return float(self.dwell_rbv.value)

    @property
    def pause_requested(self) -> bool:
        """True while ``Pause_RBV`` is 1 (a scan starting now holds before its first row)."""
        return bool(self.pause_rbv.value)

    def settings(self) -> dict:
        """Dwell and mode read back, for the file's metadata."""
        return {"dwell": self.dwell_rbv.value, "mode": self.mode_rbv.value}

    def geometry(self) -> dict:
        """The scan as read back, in SI units (the twin's ``ScanGeometry`` fields;
        ``offset`` is ``SCAN:OffsetY/X``, which the frame source combines with the
        stage)."""
        return {
            "shape": (int(self.shape_y_rbv.value), int(self.shape_x_rbv.value)),
            "step": (self.step_y_rbv.value * 1e-9, self.step_x_rbv.value * 1e-9),
            "rotation": math.radians(self.rotation_rbv.value),
            "flyback": float(self.flyback_rbv.value),
            "offset": (self.offset_y_rbv.value * 1e-9, self.offset_x_rbv.value * 1e-9),
        }

    def beam_position(self) -> tuple[float, float]:
        """Beam position (y, x) in metres from the scan centre."""
        return (self.beam_y_rbv.value * 1e-9, self.beam_x_rbv.value * 1e-9)
