"""The simulated instrument: the top PV group, its shared state and the acquisition flow.

One :class:`Instrument` serves ``PFX:MIC:``, ``PFX:SCAN:``, ``PFX:DET:cam1:``,
``PFX:DET:HDF1:`` and ``PFX:STATUS`` (+ ``STATUS:Message``).  Frames never touch the
asyncio loop: an :class:`~bluestem.ioc.acquisition.AcquisitionEngine` thread renders and
submits them, and a 10 Hz hook publishes its counters and finishes the acquisition.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from caproto import AlarmSeverity, AlarmStatus
from caproto.server import SubGroup

from .acquisition import AcquisitionEngine, FramePlan, run_in_background_thread
from .backend import TwinReuse, build_render, twin_parameters
from .detector import Camera
from .hdf import HDFWriter
from .metadata import calibration, file_metadata
from .microscope import Microscope
from .scan_generator import ScanGenerator
from .settings import SettingsGroup, long_string, readback
from .validation import (
    InvalidSetting,
    check_directory,
    check_free_space,
    estimate_file_bytes,
)

__all__ = ["Instrument", "InstrumentConfig"]

STATUS_STATES = ("OK", "WARN", "FAULT")
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


@dataclass(frozen=True)
class InstrumentConfig:
    """Run-time options of ``bluestem ioc sim`` (no PV prefix, no defaults for paths)."""

    data_dir: str = ""
    specimen: str = "srtio3"
    faults: str = ""
    stuck: frozenset[str] = field(default_factory=frozenset)
    seed: int = 0
    max_rate: bool = False


class Instrument(SettingsGroup):
    """The whole simulated instrument.

    PVs: ``STATUS`` (OK/WARN/FAULT: overall health for an operator) and
    ``STATUS:Message``, plus the sub-groups :class:`Microscope` (``MIC:``),
    :class:`ScanGenerator` (``SCAN:``), :class:`Camera` (``DET:cam1:``) and
    :class:`HDFWriter` (``DET:HDF1:``).
    """

    mic = SubGroup(Microscope, prefix="MIC:")
    scan = SubGroup(ScanGenerator, prefix="SCAN:")
    cam = SubGroup(Camera, prefix="DET:cam1:")
    hdf = SubGroup(HDFWriter, prefix="DET:HDF1:")
    status = readback("STATUS", "OK", "Overall health.", enum_strings=STATUS_STATES)
    status_message = long_string("STATUS:Message", "OK", "Why STATUS is not OK.", read_only=True)

    def __init__(self, *args, config: InstrumentConfig | None = None, **kwargs):
        self.config = config or InstrumentConfig()
        super().__init__(*args, **kwargs)
        self._flags: dict[str, str] = {}
        self._fault: str | None = None
        self._writer = None
        self._params: dict | None = None
        self._engine: AcquisitionEngine | None = None
        self._engine_kind = ""  # "scan" or "series"
        self._armed = False
        self._stop_requested = ""
        self._acquisitions = 0
        self._twins = TwinReuse()
        self._published = 0.0

    # -- state -----------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a file is open or frames are being produced."""
        running = self._engine is not None
        return running or self._writer is not None

    async def flag(self, instance, message: str) -> None:
        self._flags[instance.pvname] = message
        await self._publish_status(message)

    async def clear_flag(self, instance) -> None:
        if self._flags.pop(instance.pvname, None) is not None:
            await instance.alarm.write(
                status=AlarmStatus.NO_ALARM, severity=AlarmSeverity.NO_ALARM
            )
            await self._publish_status()

    async def _publish_status(self, message: str | None = None) -> None:
        if self._fault:
            state, message = "FAULT", self._fault
        elif self._flags:
            state = "WARN"
            message = message or next(reversed(self._flags.values()))
        else:
            state, message = "OK", "OK"
        await self.status.write(state)
        await self.status_message.write(message[:255])

    def hold_scan(self, on: bool) -> None:
        """SCAN:Pause: hold a running scan at its next row boundary, or go on."""
        if self._engine is not None and self._engine_kind == "scan":
            (self._engine.pause if on else self._engine.resume)()

    def beam_blanked(self, on: bool) -> None:
        if self._engine is not None:
            self._engine.blank(on)

    # -- parameters ------------------------------------------------------------------
    def _parameters(self, internal: bool) -> dict:
        dwell = self.cam.acquire_time_rbv.value if internal else self.scan.dwell_rbv.value
        detector = dict(self.cam.model(), camera_length=self.mic.camera_length_rbv.value * 1e-3)
        return twin_parameters(
            optics=self.mic.optics_state(),
            detector=detector,
            scan=self.scan.geometry(),
            specimen=self.config.specimen,
            dose_per_frame=self.mic.dose_per_frame(dwell),
            seed=self.config.seed + self._acquisitions,
            faults=self.config.faults,
        )

    def _internal(self) -> bool:
        return self.cam.trigger_mode_rbv.value == "Internal"

    def _series_length(self) -> int:
        mode = self.cam.image_mode_rbv.value
        n = {"Single": 1, "Multiple": int(self.cam.num_images_rbv.value)}.get(mode, CONTINUOUS)
        if self._writer is not None:
            n = min(n, int(self.hdf.num_capture_rbv.value))
        return n

    # -- capture (HDF1) --------------------------------------------------------------
    async def open_capture(self) -> None:
        pv = self.hdf.capture.pvname
        if self._writer is not None:
            return  # already capturing
        if self._engine is not None:
            raise InvalidSetting(pv, "cannot open a file while frames are being produced")
        path = self.hdf.file_path_rbv.value
        try:
            check_directory(self.hdf.file_path.pvname, path)
        except InvalidSetting:
            await self.hdf.file_path_exists.write(0)
            raise
        full = self.hdf.next_file()
        if os.path.exists(full):
            raise InvalidSetting(
                pv, f"{full!r} exists and is never overwritten (allowed: a new FileNumber/Name)"
            )
        internal = self._internal()
        scan_shape = (
            (int(self.hdf.num_capture_rbv.value),)
            if internal
            else tuple(self.scan.geometry()["shape"])
        )
        n = 1
        for s in scan_shape:
            n *= s
        needed = estimate_file_bytes(n, self.cam.frame_shape(), self.cam.dtype().itemsize)
        try:
            check_free_space(pv, path, needed)
        except InvalidSetting as exc:
            raise InvalidSetting(pv, f"scan shape {scan_shape}: {exc}") from None
        params = self._parameters(internal)
        from bluestem.frames import FrameWriter

        compression = self.hdf.compression_rbv.value
        writer = FrameWriter(
            full,
            scan_shape=scan_shape,
            frame_shape=self.cam.frame_shape(),
            dtype=self.cam.dtype(),
            compression=None if compression == "None" else compression,
            metadata=file_metadata(self, params, scan_shape),
            calibration=calibration(params),
        )
        try:
            # The writer's thread inherits the low priority of the thread that opens it.
            await asyncio.to_thread(run_in_background_thread, writer.open)
        except (OSError, ValueError) as exc:
            await self._write_status(False, f"cannot open {full}: {exc}")
            raise InvalidSetting(pv, f"cannot open {full!r}: {exc}") from exc
        self._writer, self._params = writer, params
        self._acquisitions += 1
        await self.hdf.full_file_name.write(full)
        await self.hdf.num_captured.write(0)
        await self.hdf.dropped_frames.write(0)
        await self._write_status(True, f"Capturing to {full}")
        await self.hdf.capture_rbv.write(1)

    async def close_capture(self) -> None:
        if self._writer is None:
            return
        if self._engine is not None:
            self._stop_requested = self._stop_requested or "stop"
            self._engine.stop()  # the monitor closes the file when the engine ends
        elif self._writer is not None:
            writer, self._writer = self._writer, None
            summary = await asyncio.to_thread(writer.close)
            await self._finish_file(summary, dropped=0, error=None)

    # -- acquisition -----------------------------------------------------------------
    async def start_acquire(self) -> None:
        if self._engine is not None:
            return
        if not self._internal():
            self._armed = True
            await self.cam.acquire_rbv.write(1)
            await self.cam.detector_state.write("Waiting")
            await self.cam.message.write("Armed: waiting for the scan")
            return
        await self._start_engine("series")

    async def stop_acquire(self) -> None:
        self._armed = False
        if self._engine is not None:
            self._stop_requested = self._stop_requested or "stop"
            self._engine.stop()
        else:
            await self.cam.acquire_rbv.write(0)
            await self.cam.detector_state.write("Idle")

    async def start_scan(self) -> None:
        if self._engine is not None:
            raise InvalidSetting(
                self.scan.start.pvname, "a scan is already running (allowed: Stop or Abort first)"
            )
        await self._start_engine("scan")

    async def stop_scan(self, *, abort: bool) -> None:
        if self._engine is None:
            return
        self._stop_requested = "abort" if abort else (self._stop_requested or "stop")
        (self._engine.abort if abort else self._engine.stop)()

    async def _start_engine(self, kind: str) -> None:
        internal = kind == "series"
        if self._writer is not None:
            params = self._params
        else:
            params = self._parameters(internal)
            self._acquisitions += 1
        records = internal or self._armed
        max_rate = self.config.max_rate
        if internal:
            n, row = self._series_length(), None
            period = 0.0 if max_rate else self.cam.acquire_period_rbv.value
            flyback = 0.0
        else:
            ny, nx = params["scan"]["shape"]
            n, row = ny * nx, nx
            period = 0.0 if max_rate else self.scan.dwell_rbv.value
            flyback = params["scan"]["flyback"]
        prepare = None
        faults = None
        if records:
            from bluestem.twin import FaultPlan

            faults = FaultPlan.parse(params["faults"]) if params["faults"] else None
            position = self.scan.beam_position() if internal else None

            def prepare():
                return build_render(self._twins.twin_for(params), position=position)

        fy, fx = self.cam.frame_shape()
        plan = FramePlan(
            n_frames=n,
            row_length=row or min(n, 1 << 20),
            period=period,
            flyback=flyback,
            frame_bytes=fy * fx * self.cam.dtype().itemsize,
        )
        engine = AcquisitionEngine(
            None,
            self._writer if records else None,
            plan,
            prepare=prepare,
            render_threads=RENDER_THREADS,
            dropped=faults.dropped if faults else frozenset(),
            late=dict(faults.late) if faults else None,
        )
        engine.blank(self.mic.beam_blank_rbv.value == "On")
        if not internal and self.scan.pause_rbv.value:
            engine.pause()  # started while held: wait before the first row
        self._engine, self._engine_kind, self._stop_requested = engine, kind, ""
        engine.start()
        if records:
            await self.cam.acquire_rbv.write(1)
            await self.cam.detector_state.write("Acquire")
            await self.cam.array_counter.write(0)
            await self.cam.message.write("Acquiring")
        if not internal:
            await self.scan.state.write("Running")
            await self.scan.progress.write(0.0)
            await self.scan.frames_done.write(0)

    # -- the monitor: counters at 10 Hz, the end of an acquisition within 20 ms ------
    @status.startup
    async def status(self, instance, async_lib):
        if self.config.data_dir:
            await self.hdf.file_path.write(self.config.data_dir, verify_value=False)
            await self.hdf.file_path_rbv.write(self.config.data_dir)
            exists = os.path.isdir(self.config.data_dir)
            await self.hdf.file_path_exists.write(int(exists))
        await self.cam.update_array_info()
        await self.hdf.full_file_name.write(self.hdf.next_file())

    @status.scan(period=FINISH_POLL)
    async def status(self, instance, async_lib):
        engine = self._engine
        if engine is None:
            return
        snap = engine.snapshot()
        now = time.monotonic()
        if snap.finished or now - self._published >= COUNTS_PERIOD:
            self._published = now
            await self._publish_counts(snap)
        if snap.finished:
            await self._finish(snap)

    async def _publish_counts(self, snap) -> None:
        if self._engine_kind == "scan":
            await self.scan.progress.write(round(snap.progress, 2))
            await self.scan.frames_done.write(snap.produced)
            held = "Paused" if snap.state == "paused" else "Running"
            if not snap.finished and self.scan.state.value != held:
                await self.scan.state.write(held)
        await self.cam.array_counter.write(snap.submitted)
        if self._writer is not None and snap.written != self.hdf.num_captured.value:
            await self.hdf.num_captured.write(snap.written)
        if snap.dropped != self.hdf.dropped_frames.value:
            await self.hdf.dropped_frames.write(snap.dropped)

    async def _finish(self, snap) -> None:
        kind, requested = self._engine_kind, self._stop_requested
        self._engine, self._armed = None, False
        error = snap.error
        if self._writer is not None:
            self._writer = None
            # Every position the beam visited whose frame is not in the file counts as
            # dropped (fault-plan drops, late frames cut off by a stop, frames an abort
            # discarded): captured + dropped is then the visited extent the session
            # announces, and the received map says which of those frames exist.
            written = snap.summary.frames_written if snap.summary is not None else snap.written
            await self._finish_file(snap.summary, dropped=snap.produced - int(written),
                                    error=error)  # fmt: skip
        await self.cam.acquire.write(0, verify_value=False)
        await self.cam.acquire_rbv.write(0)
        cam_state = {"fault": "Error", "aborted": "Aborted"}.get(snap.state, "Idle")
        await self.cam.detector_state.write(cam_state)
        text = f"{snap.state}: {snap.submitted} frames, {snap.dropped} dropped"
        if error is not None:
            text = f"Error: {error}"
        await self.cam.message.write(text[:255])
        if kind == "scan":
            state = {"fault": "Fault", "aborted": "Aborted"}.get(snap.state, "Done")
            if requested == "abort":
                state = "Aborted"
            await self.scan.state.write(state)
            await self.scan.message.write(text[:255])
        if error is not None:
            self._fault = f"acquisition failed: {error}"
            await self._publish_status()

    async def _finish_file(self, summary, *, dropped: int, error) -> None:
        if summary is not None:
            await self.hdf.num_captured.write(int(summary.frames_written))
        await self.hdf.dropped_frames.write(int(dropped))
        if error is None and summary is not None:
            await self._write_status(
                True,
                f"Wrote {summary.frames_written} of {summary.frames_expected} frames "
                f"({dropped} dropped) to {summary.path} in {summary.seconds:.2f} s",
            )
        else:
            await self._write_status(False, f"Write error: {error}")
        await self.hdf.capture.write(0, verify_value=False)
        await self.hdf.capture_rbv.write(0)
        if self.hdf.auto_increment_rbv.value == "Yes":
            number = int(self.hdf.file_number_rbv.value) + 1
            await self.hdf.file_number.write(number, verify_value=False)
            await self.hdf.file_number_rbv.write(number)

    async def _write_status(self, ok: bool, message: str) -> None:
        await self.hdf.write_status.write("Write OK" if ok else "Write error")
        await self.hdf.write_message.write(message[:255])

    # -- process exit ----------------------------------------------------------------
    def shutdown(self, timeout: float = 30.0) -> None:
        """Abort whatever runs and close the file read-only (called when the IOC exits)."""
        engine, writer = self._engine, self._writer
        if engine is not None:
            engine.abort()
            engine.join(timeout)
        elif writer is not None:
            writer.abort()
