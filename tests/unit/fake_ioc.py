"""The IOC behind fake devices, in-process (see ``fake_devices`` for the fakes).

:class:`FakeIOC` is the IOC's behaviour the devices rely on: verified settings follow
their setpoints, ``HDF1:Capture`` opens a real raw file with
:class:`bluestem.frames.FrameWriter` (publishing ``FullFileName_RBV`` and
``ChunkShape_RBV`` before ``Capture_RBV`` is 1), ``SCAN:Start`` writes one frame per
position row by row while publishing ``NumCaptured_RBV``/``DroppedFrames_RBV``, and the
end of a file writes the final counters before ``Capture_RBV`` goes back to 0.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np
from fake_devices import PREFIX, echo_settings, fake_detector, initial, instantiate
from ophyd import Signal

from bluestem.devices import Microscope, PutRefused, ScanGenerator
from bluestem.instrument import (
    BeamBlank,
    DetectorState,
    ScanMode,
    ScanState,
    TriggerMode,
    WriteStatus,
    dtype_of_data_type,
)

__all__ = ["FakeIOC", "fake_instrument"]


class FakeIOC:
    """The IOC behind fake detector, scan generator and microscope devices.

    Parameters
    ----------
    det, scan, mic : fake devices (:func:`fake_instrument`)
    frames : ndarray, optional
        ``(n, ky, kx)`` frames, frame ``i`` for scan position ``i`` (default: Poisson
        noise with a bright disc, seeded).
    drop : iterable of int
        Scan positions whose frame is never delivered (counted as dropped).
    row_time : float
        s per scan row.
    late_final_dropped : float
        When > 0, ``DroppedFrames_RBV`` is published only when the file closes (as for
        frames an abort discarded), and its monitor update reaches the client this long
        after ``Capture_RBV`` went back to 0 (the value itself is there before): the
        race the plans must survive.

    Attributes
    ----------
    refuse : dict
        PV name -> message: a put to it is refused with :class:`PutRefused`.
    on_row : callable, optional
        ``on_row(row)`` after each scan row is published.
    files : list of str
        Every file opened.
    """

    def __init__(self, det, scan, mic=None, *, frames=None, drop=(), row_time=0.002,
                 late_final_dropped: float = 0.0):  # fmt: skip
        self.det, self.scan, self.mic = det, scan, mic
        self.frames = frames
        self.drop = set(drop)
        self.row_time = row_time
        self.late_final_dropped = late_final_dropped
        self.refuse: dict[str, str] = {}
        self.on_row: Callable[[int], None] | None = None
        self.files: list[str] = []
        self.writer = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._hold = threading.Event()
        self._thread: threading.Thread | None = None
        self._armed = False
        self._wire()

    # -- wiring ------------------------------------------------------------------------
    def _guard(self, signal, action):
        def putter(value, *_, **__):
            if signal.pvname in self.refuse:
                raise PutRefused(signal.pvname, self.refuse[signal.pvname])
            Signal.put(signal, value, force=True)
            action(value)

        signal.sim_set_putter(putter)

    def _wire(self) -> None:
        det, scan = self.det, self.scan
        echo_settings(scan, refuse=self.refuse, after=self._couple)
        if self.mic is not None:
            echo_settings(self.mic, refuse=self.refuse)
        echo_settings(det, refuse=self.refuse)
        self._guard(det.hdf.capture, self._capture)
        self._guard(det.cam.acquire, self._acquire)
        self._guard(scan.start, self._start)
        self._guard(scan.stop_scan, lambda v: v and self._stop.set())
        self._guard(scan.abort, lambda v: v and self._stop.set())
        self._guard(scan.hold, lambda v: self._hold.set() if v else self._hold.clear())

    def _couple(self, setting, value) -> None:
        """Fov = Step × Shape: a shape keeps the step, a fov sets the step."""
        scan = self.scan
        for axis in ("x", "y"):
            shape, step, fov = (getattr(scan, f"{k}_{axis}") for k in ("shape", "step", "fov"))
            if setting is shape or setting is step:
                fov.readback.sim_put(float(step.get()) * int(shape.get()))
            elif setting is fov:
                step.readback.sim_put(float(value) / int(shape.get()))

    # -- file --------------------------------------------------------------------------
    def _frame(self, index: int, frame_shape, dtype) -> np.ndarray:
        if self.frames is not None:
            return np.ascontiguousarray(self.frames[index], dtype=dtype)
        rng = np.random.default_rng(index)
        frame = rng.poisson(4.0, size=frame_shape)
        ky, kx = frame_shape
        yy, xx = np.indices(frame_shape)
        frame[(yy - ky / 2) ** 2 + (xx - kx / 2) ** 2 < (min(ky, kx) / 5) ** 2] += 50
        return frame.astype(dtype)

    def _capture(self, value) -> None:
        if value:
            self._open()
        elif self.writer is not None and not self._armed:
            self._finish(produced=0)

    def _open(self) -> None:
        from bluestem.frames import FrameWriter

        det, hdf = self.det, self.det.hdf
        with self._lock:
            if self.writer is not None:
                return
            directory = str(hdf.file_path.get())
            if not os.path.isdir(directory):
                raise PutRefused(hdf.file_path.setting, f"{directory!r} is not a directory")
            path = directory if directory.endswith(os.sep) else directory + os.sep
            full = str(hdf.file_template.get()) % (path, hdf.file_name.get(),
                                                    int(hdf.file_number.get()))  # fmt: skip
            if os.path.exists(full):
                raise PutRefused(hdf.capture.pvname, f"{full!r} exists")
            internal = det.cam.trigger_mode.get() == TriggerMode.INTERNAL
            scan = self.scan
            scan_shape = ((int(hdf.num_capture.get()),) if internal
                          else (int(scan.shape_y.get()), int(scan.shape_x.get())))  # fmt: skip
            dtype = dtype_of_data_type(det.cam.data_type.get())
            writer = FrameWriter(full, scan_shape=scan_shape, frame_shape=det.cam.frame_shape(),
                                 dtype=dtype)  # fmt: skip
            writer.open()
            self.writer, self.files = writer, [*self.files, full]
            self._stop.clear()
            hdf.full_file_name.sim_put(full)
            chunks = np.zeros(4, dtype=np.int32)
            chunks[: len(writer.grid.chunk_shape)] = writer.grid.chunk_shape
            hdf.chunk_shape.sim_put(chunks)
            hdf.num_captured.sim_put(0)
            hdf.dropped_frames.sim_put(0)
            hdf.write_status.sim_put(str(WriteStatus.OK))
            hdf.capture_rbv.sim_put(1)

    def _finish(self, produced: int) -> None:
        det, hdf = self.det, self.det.hdf
        with self._lock:
            writer, self.writer = self.writer, None
            self._armed = False
        if writer is not None:
            summary = writer.close()
            dropped = produced - summary.frames_written
            hdf.num_captured.sim_put(summary.frames_written)
            if self.late_final_dropped > 0:
                # The value is there at once, its monitor update comes late.
                hdf.dropped_frames._readback = dropped
                timer = threading.Timer(self.late_final_dropped, hdf.dropped_frames.sim_put,
                                        [dropped])  # fmt: skip
                timer.daemon = True
                timer.start()
            else:
                hdf.dropped_frames.sim_put(dropped)
            hdf.capture_rbv.sim_put(0)
        det.cam.acquire_rbv.sim_put(0)
        det.cam.detector_state.sim_put(str(DetectorState.IDLE))

    # -- acquisition -------------------------------------------------------------------
    def _acquire(self, value) -> None:
        det = self.det
        if not value:
            self._stop.set()
            idle = self._thread is None or not self._thread.is_alive()
            if idle and self._armed:
                self._finish(produced=0)  # armed, the scan never started
            return
        if det.cam.trigger_mode.get() == TriggerMode.INTERNAL:
            det.cam.acquire_rbv.sim_put(1)
            self._run(self._internal)
        else:
            self._armed = True
            det.cam.detector_state.sim_put(str(DetectorState.WAITING))
            det.cam.acquire_rbv.sim_put(1)

    def _run(self, target) -> None:
        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def _internal(self) -> None:
        writer = self.writer
        n = writer.frames_expected if writer is not None else 0
        frame_shape, dtype = self.det.cam.frame_shape(), np.dtype(np.uint16)
        if writer is not None:
            dtype = writer.dtype
            for i in range(n):
                writer.submit(i, self._frame(i, frame_shape, dtype)[None])
        self._finish(produced=n)

    def _start(self, value) -> None:
        if not value:
            return
        if not self._armed or self.writer is None:
            raise PutRefused(self.scan.start.pvname, "the detector is not armed")
        self.scan.state.sim_put(str(ScanState.RUNNING))
        self._run(self._scan)

    def _scan(self) -> None:
        writer, hdf = self.writer, self.det.hdf
        ny, nx = writer.scan_shape
        frame_shape, dtype = writer.frame_shape, writer.dtype
        produced = dropped = 0
        for y in range(ny):
            while self._hold.is_set() and not self._stop.is_set():
                self.scan.state.sim_put(str(ScanState.PAUSED))
                time.sleep(0.005)
            if self._stop.is_set():
                break
            self.scan.state.sim_put(str(ScanState.RUNNING))
            for x in range(nx):
                i = y * nx + x
                if i in self.drop:
                    dropped += 1
                else:
                    writer.submit(i, self._frame(i, frame_shape, dtype)[None])
                produced += 1
            # What the writer has on disk (a chunk with a missing frame waits until it is
            # stale or the file closes), as the IOC publishes it.
            deadline = time.monotonic() + 0.2
            while writer.num_written < produced - dropped and time.monotonic() < deadline:
                time.sleep(0.001)
            hdf.num_captured.sim_put(writer.num_written)
            if dropped != hdf.dropped_frames.get() and not self.late_final_dropped:
                hdf.dropped_frames.sim_put(dropped)
            self.scan.frames_done.sim_put(produced)
            if self.on_row is not None:
                self.on_row(y)
            time.sleep(self.row_time)
        stopped = self._stop.is_set()
        self._finish(produced=produced)
        self.scan.state.sim_put(str(ScanState.ABORTED if stopped else ScanState.DONE))

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until the acquisition thread (if any) has ended."""
        if self._thread is not None:
            self._thread.join(timeout)


def fake_instrument(root, *, frame_shape=(16, 16), **ioc_kwargs):
    """``(ioc, det, scan, mic)``: fake devices at rest behind a :class:`FakeIOC`."""
    det = fake_detector(root, frame_shape=frame_shape)
    scan = instantiate(ScanGenerator, prefix=PREFIX + "SCAN:", name="scan")
    mic = instantiate(Microscope, prefix=PREFIX + "MIC:", name="mic")
    for setting, value in [
        (scan.shape_x, 1), (scan.shape_y, 1), (scan.step_x, 1.0), (scan.step_y, 1.0),
        (scan.fov_x, 1.0), (scan.fov_y, 1.0), (scan.dwell, 1e-3), (scan.rotation, 0.0),
        (scan.flyback, 0.0), (scan.mode, str(ScanMode.FLY)), (scan.beam_x, 0.0),
        (scan.beam_y, 0.0),
    ]:  # fmt: skip
        initial(setting, value)
    scan.state.sim_put(str(ScanState.IDLE))
    scan.message.sim_put("")
    for name in Microscope.SETTINGS:
        initial(getattr(mic, name), str(BeamBlank.OFF) if name == "beam_blank" else 0.0)
    initial(mic.camera_length, 100.0)
    initial(mic.high_tension, 200.0)
    initial(mic.convergence_angle, 20.0)
    mic.cs.sim_put(1.2)
    mic.message.sim_put("")
    ioc = FakeIOC(det, scan, mic, **ioc_kwargs)
    return ioc, det, scan, mic
