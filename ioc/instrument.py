"""The simulated instrument: the top PV group; it runs the acquisition engine.

One :class:`Instrument` serves ``PFX:MIC:``, ``PFX:SCAN:``, ``PFX:DET:cam1:``,
``PFX:DET:HDF1:`` and ``PFX:STATUS`` (+ ``STATUS:Message``). Each group owns its PVs; the
instrument is their :class:`~bluestem.ioc.control.Controller`: it reads them back, asks
its :class:`~bluestem.ioc.source.FrameSource` for the frames, asks the HDF group for a
file, runs an :class:`~bluestem.ioc.acquisition.AcquisitionEngine` and tells each group
what happened. Frames never touch the asyncio loop: the engine's thread renders and
submits them, and a 10 Hz hook publishes its counters and finishes the acquisition.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass, field

from caproto import AlarmSeverity, AlarmStatus
from caproto.server import SubGroup

from bluestem.instrument import DetectorState, Health, ScanState, names

from .acquisition import AcquisitionEngine, EngineState, FrameSchedule
from .detector import Camera
from .hdf import HDFWriter
from .hidden import HiddenState
from .metadata import calibration, file_metadata
from .microscope import Microscope
from .scan_generator import ScanGenerator
from .settings import SettingsGroup, long_string, readback, trigger
from .source import FrameRecipe, FrameSource, Readback, StreamRequest
from .status import StatusBoard, error_text
from .twin_source import TwinSource
from .validation import InvalidSetting

__all__ = ["Instrument", "InstrumentConfig"]

# Frames of an open-ended (Continuous, no capture) series: effectively until stopped.
CONTINUOUS = 2**40
# The twin renders with the GIL released: one render thread per core (the writer's thread
# shares them; measured in benchmarks/ioc_acquire.py).
RENDER_THREADS = max(1, os.cpu_count() or 1)
# The counters (progress, NumCaptured_RBV, ...) are published at 10 Hz; the end of an
# acquisition is noticed within FINISH_POLL: a 0.5 s scan lost up to a fifth of its rate
# waiting for the next 10 Hz tick to close its file.
COUNTS_PERIOD = 0.1
FINISH_POLL = 0.02
FREE_SPACE_PERIOD = 1.0  # s between updates of HDF1:FreeSpace_RBV
# How an engine's end reads on the detector and the scan.
DETECTOR_END = {EngineState.FAULT: DetectorState.ERROR, EngineState.ABORTED: DetectorState.ABORTED}
SCAN_END = {EngineState.FAULT: ScanState.FAULT, EngineState.ABORTED: ScanState.ABORTED}


logger = logging.getLogger(__name__)

#: The CA alarm severity of each ``STATUS`` (an alarm handler's colours).
HEALTH_SEVERITY = {
    Health.OK: AlarmSeverity.NO_ALARM,
    Health.WARN: AlarmSeverity.MINOR_ALARM,
    Health.FAULT: AlarmSeverity.MAJOR_ALARM,
    Health.PAUSED: AlarmSeverity.MINOR_ALARM,
}


@dataclass(frozen=True)
class InstrumentConfig:
    """Run-time options of ``bluestem ioc sim`` (no PV prefix, no defaults for paths)."""

    data_dir: str = ""
    specimen: str = "srtio3"
    faults: str = ""
    stuck: frozenset[str] = field(default_factory=frozenset)
    seed: int = 0
    max_rate: bool = False
    #: what no PV shows (``--column``, ``--drift``, ``--tilt``): the twin source's
    hidden: HiddenState = field(default_factory=HiddenState)
    #: the private truth file (``--truth``), "" for none
    truth: str = ""
    #: (ky, kx) of a real sensor (a Merlin, a replayed file): the size and its maximum
    sensor: tuple[int, int] | None = None
    #: the counter depth the detector starts with (a replayed file's: its dtype's)
    counter_depth: int | None = None
    #: FrameWriter's ``sync_interval`` (s; None: never fsync), ``--sync-interval``
    sync_interval: float | None = None


def _no_file(path: str, text: str) -> None:
    """Where a stream's reserved texts go when no file is open: nowhere."""


class Instrument(SettingsGroup):
    """The whole simulated instrument.

    PVs: ``STATUS`` (OK/WARN/FAULT: overall health for an operator, with the CA alarm
    severity NO_ALARM/MINOR/MAJOR), ``STATUS:Message`` and ``STATUS:Acknowledge`` (1
    clears a FAULT without restarting the IOC), plus the sub-groups :class:`Microscope` (``MIC:``),
    :class:`ScanGenerator` (``SCAN:``), :class:`Camera` (``DET:cam1:``) and
    :class:`HDFWriter` (``DET:HDF1:``).

    Parameters
    ----------
    *args, **kwargs
        Of :class:`caproto.server.PVGroup` (``prefix=``).
    config : InstrumentConfig, optional
        Run-time options (default: all defaults).
    source : FrameSource, optional
        Where frames come from (default: a :class:`~bluestem.ioc.twin_source.TwinSource`
        of ``config``'s specimen, seed and faults).
    """

    mic = SubGroup(Microscope, prefix="MIC:")
    scan = SubGroup(ScanGenerator, prefix="SCAN:")
    cam = SubGroup(Camera, prefix="DET:cam1:")
    hdf = SubGroup(HDFWriter, prefix="DET:HDF1:")
    status = readback("STATUS", Health.OK, "Overall health.", enum_strings=names(Health))
    status_message = long_string(
        "STATUS:Message", Health.OK, "Why STATUS is not OK.", read_only=True
    )
    acknowledge = trigger(
        "STATUS:Acknowledge", "Write 1 to acknowledge and clear a FAULT (the IOC stays up)."
    )

    @acknowledge.fires
    async def acknowledge(self):
        fault = await self.board.acknowledge()
        if fault is not None:
            logger.warning("fault acknowledged and cleared: %s", fault)

    def __init__(
        self,
        *args,
        config: InstrumentConfig | None = None,
        source: FrameSource | None = None,
        **kwargs,
    ):
        self.config = config = config or InstrumentConfig()
        if source is None:
            source = TwinSource(
                config.specimen,
                seed=config.seed,
                faults=config.faults,
                max_rate=config.max_rate,
                hidden=config.hidden,
                truth=config.truth,
            )
        self.source = source
        super().__init__(*args, **kwargs)
        board = StatusBoard(self._publish_health)
        for group in (self, self.mic, self.scan, self.cam, self.hdf):
            group.attach(self, board)
        self.mic.stuck = frozenset(config.stuck)
        self._engine: AcquisitionEngine | None = None
        self._engine_kind = ""  # "scan" or "series"
        # The readback and frames of the open file (None while no file is open).
        self._file: tuple[Readback, FrameRecipe] | None = None
        self._armed = False
        self._stop_requested = ""
        self._acquisitions = 0
        self._published = 0.0
        self._space_checked = 0.0

    # -- state -----------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a file is open or frames are being produced."""
        return self._engine is not None or self.hdf.capturing

    async def _publish_health(self, health: Health, message: str) -> None:
        # A real CA alarm, so that alarm handlers and display managers colour it too.
        severity = HEALTH_SEVERITY[health]
        alarm = AlarmStatus.NO_ALARM if severity == AlarmSeverity.NO_ALARM else AlarmStatus.STATE
        await self.status.write(health.value, status=alarm, severity=severity)
        await self.status_message.write(message)

    def hold_scan(self, on: bool) -> None:
        """SCAN:Pause: hold a running scan at its next row boundary, or go on."""
        if self._engine is not None and self._engine_kind == "scan":
            (self._engine.pause if on else self._engine.resume)()

    def beam_blanked(self, on: bool) -> None:
        """MIC:BeamBlank: the frames from now on carry no dose, or do again."""
        if self._engine is not None:
            self._engine.blank(on)

    # -- parameters ------------------------------------------------------------------
    def _readback(self, internal: bool) -> Readback:
        """The instrument as read back, for a series (``internal``) or a scan."""
        dwell = self.cam.exposure() if internal else self.scan.dwell_time()
        return Readback.of(
            optics=self.mic.optics_state(),
            detector={**self.cam.model(), "camera_length": self.mic.camera_length_m()},
            scan=self.scan.geometry(),
            dose_per_frame=self.mic.dose_per_frame(dwell),
            beam_position=self.scan.beam_position() if internal else None,
            stage=self.mic.stage_position(),
        )

    def _prepare(self, internal: bool) -> tuple[Readback, FrameRecipe]:
        """The readback now and the source's frames of the next acquisition."""
        readback = self._readback(internal)
        return readback, self.source.recipe(readback, number=self._acquisitions)

    def _parameters(self, internal: bool) -> dict:
        """The source's parameters of an acquisition started now (what a file records)."""
        return dict(self._prepare(internal)[1].parameters)

    # -- capture (HDF1) --------------------------------------------------------------
    async def open_capture(self) -> None:
        """Open the next file for the scan (External) or a series (Internal)."""
        if self.hdf.capturing:
            return  # already capturing
        if self._engine is not None:
            raise InvalidSetting(
                self.hdf.capture.pvname, "cannot open a file while frames are being produced"
            )
        internal = self.cam.internal
        readback, recipe = self._prepare(internal)
        scan_shape = (self.hdf.capture_length(),) if internal else tuple(readback.scan["shape"])
        frame_shape = self.cam.frame_shape()
        metadata = file_metadata(
            readback,
            scan_shape=scan_shape,
            frame_shape=frame_shape,
            scan=self.scan.settings(),
            detector=self.cam.state(),
            microscope=self.mic.state(),
            source=recipe.metadata,
        )
        self._file = (readback, recipe)  # read only while the file is open
        file = self.hdf.next_file()
        await self.hdf.open_file(
            scan_shape=scan_shape,
            frame_shape=frame_shape,
            dtype=self.cam.dtype(),
            metadata=metadata,
            calibration=calibration(readback),
        )
        self._acquisitions += 1
        recipe.started(file)

    async def close_capture(self) -> None:
        """Close the file: at once, or by ending the acquisition that feeds it."""
        if not self.hdf.capturing:
            return
        if self._engine is not None:
            self._stop_requested = self._stop_requested or "stop"
            self._engine.stop()  # the monitor closes the file when the engine ends
        else:
            await self.hdf.close_file()

    # -- acquisition -----------------------------------------------------------------
    async def start_acquire(self) -> None:
        """Arm for the scan (External) or record a series (Internal)."""
        if self._engine is not None:
            return
        if not self.cam.internal:
            self._armed = True
            await self.cam.armed()
            return
        await self._start_engine("series")

    async def stop_acquire(self) -> None:
        """Disarm, or end the running acquisition."""
        self._armed = False
        if self._engine is not None:
            self._stop_requested = self._stop_requested or "stop"
            self._engine.stop()
        else:
            await self.cam.disarmed()

    async def start_scan(self) -> None:
        """Run the scan (refused while one runs)."""
        if self._engine is not None:
            raise InvalidSetting(
                self.scan.start.pvname, "a scan is already running (allowed: Stop or Abort first)"
            )
        await self._start_engine("scan")

    async def stop_scan(self, *, abort: bool) -> None:
        """End the running acquisition early (``abort``: discarding what is pending)."""
        if self._engine is None:
            return
        self._stop_requested = "abort" if abort else (self._stop_requested or "stop")
        (self._engine.abort if abort else self._engine.stop)()

    async def _start_engine(self, kind: str) -> None:
        internal = kind == "series"
        writer = self.hdf.writer
        if writer is not None and self._file is not None:
            readback, recipe = self._file
        else:
            readback, recipe = self._prepare(internal)
            self._acquisitions += 1
            recipe.started("")
        records = internal or self._armed
        max_rate = self.config.max_rate
        if internal:
            length = self.cam.series_length()
            n, row = CONTINUOUS if length is None else length, None
            if writer is not None:
                n = min(n, self.hdf.capture_length())
            period = 0.0 if max_rate else self.cam.period()
            flyback = 0.0
        else:
            ny, nx = readback.scan["shape"]
            n, row = ny * nx, nx
            period = 0.0 if max_rate else self.scan.dwell_time()
            flyback = readback.scan["flyback"]
        fy, fx = self.cam.frame_shape()
        schedule = FrameSchedule(
            n_frames=n,
            row_length=row or min(n, 1 << 20),
            period=period,
            flyback=flyback,
            frame_bytes=fy * fx * self.cam.dtype().itemsize,
        )
        prepare = recipe.prepare
        if recipe.stream is not None:  # the source paces the frames: it needs the timing
            request = StreamRequest(
                n_frames=n,
                period=self.cam.period() if internal else self.scan.dwell_time(),
                exposure=self.cam.exposure() if internal else self.scan.dwell_time(),
                annotate=writer.fill_text if writer is not None else _no_file,
            )
            prepare = functools.partial(recipe.stream, request)
        engine = AcquisitionEngine(
            None,
            writer if records else None,
            schedule,
            prepare=prepare if records else None,
            render_threads=RENDER_THREADS,
            dropped=recipe.dropped if records else frozenset(),
            late=dict(recipe.late) if records else None,
            withhold_blanked=not internal,  # a series with the beam blanked is a dark
        )
        engine.blank(self.mic.blanked)
        if not internal and self.scan.pause_requested:
            engine.pause()  # started while held: wait before the first row
        self._engine, self._engine_kind, self._stop_requested = engine, kind, ""
        engine.start()
        if records:
            await self.cam.acquiring()
        if not internal:
            await self.scan.running()

    # -- the monitor: counters at 10 Hz, the end of an acquisition within 20 ms ------
    @status.startup
    async def status(self, instance, async_lib):
        self.hdf.sync_interval = self.config.sync_interval
        await self.hdf.started(self.config.data_dir)
        await self.cam.fit_sensor(self.config.sensor, self.config.counter_depth)
        await self.cam.update_array_info()

    @status.scan(period=FINISH_POLL)
    async def status(self, instance, async_lib):
        now = time.monotonic()
        if now - self._space_checked >= FREE_SPACE_PERIOD:
            self._space_checked = now
            await self.hdf.update_free_space()
        engine = self._engine
        if engine is None:
            return
        snap = engine.snapshot()
        if snap.finished or now - self._published >= COUNTS_PERIOD:
            self._published = now
            await self._publish_counts(snap)
        if snap.finished:
            await self._finish(snap)

    async def _publish_counts(self, snap) -> None:
        if self._engine_kind == "scan":
            await self.scan.progress(snap.progress, snap.produced)
            if not snap.finished:
                held = snap.state == EngineState.PAUSED
                await self.scan.held(held)
                await self.board.hold(
                    f"scan held after {snap.produced} of {snap.n_frames} positions "
                    f"({self.scan.pause.pvname}=1): waiting for the operator to resume"
                    if held else None
                )  # fmt: skip
        await self.cam.delivered(snap.submitted)
        await self.hdf.counts(snap.written, snap.dropped)

    async def _finish(self, snap) -> None:
        kind, requested = self._engine_kind, self._stop_requested
        self._engine, self._armed = None, False
        await self.board.hold(None)  # a held scan that ends is held no more
        error = snap.error
        if self.hdf.capturing:
            self._file = None
            # Every position the beam visited whose frame is not in the file counts as
            # dropped (fault-schedule drops, late frames cut off by a stop, frames an
            # abort discarded): captured + dropped is then the visited extent the session
            # announces, and the received map says which of those frames exist.
            written = snap.summary.frames_written if snap.summary is not None else snap.written
            await self.hdf.file_closed(snap.summary, dropped=snap.produced - int(written),
                                       error=error)  # fmt: skip
        text = f"{snap.state}: {snap.submitted} frames, {snap.dropped} dropped"
        if snap.withheld:
            text += f", {snap.withheld} scanned with the beam blanked and not kept"
        if snap.rescans:
            text += f", rows scanned blanked taken again {snap.rescans}x"
        if error is not None:
            text = f"{DetectorState.ERROR}: {error_text(error)}"
        await self.cam.finished(DETECTOR_END.get(snap.state, DetectorState.IDLE), text)
        if kind == "scan":
            state = SCAN_END.get(snap.state, ScanState.DONE)
            if requested == "abort":
                state = ScanState.ABORTED
            await self.scan.finished(state, text)
        if error is not None:
            await self.board.fault(f"acquisition failed: {error_text(error)}")

    # -- process exit ----------------------------------------------------------------
    def shutdown(self, timeout: float = 30.0) -> None:
        """Abort whatever runs and close the file read-only (called when the IOC exits)."""
        engine = self._engine
        if engine is not None:
            engine.abort()
            engine.join(timeout)
        else:
            self.hdf.abort_file()
