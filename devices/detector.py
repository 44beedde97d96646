"""The pixelated detector: a flyer for rasters, a triggerable for step mode.

Frames never travel over Channel Access: the IOC writes them to HDF5 and this device
announces them with ``StreamResource`` / ``StreamDatum`` documents (one datum per block
of completed scan rows), so every consumer reads the same file.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from event_model import ComposeStreamResource, ComposeStreamResourceBundle, StreamRange
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.status import DeviceStatus, Status

from bluestem.instrument import (
    PIXEL_SIZE,
    DetectorState,
    ImageMode,
    TriggerMode,
    WriteStatus,
    dtype_of_data_type,
)

from .areadetector import DetectorCam, HDF5Writer, chunk_shape_of
from .liveness import Liveness, Watchdog
from .paths import PathProvider, UUIDPathProvider, resolve_path
from .put_errors import put_checked
from .stream import RowBatcher
from .threaded import status_of_thread, wait_until

__all__ = ["AcquisitionError", "PixelatedDetector"]

logger = logging.getLogger(__name__)

MIMETYPE = "application/x-hdf5"
POLL = 0.05  # s between counter polls while waiting for the IOC


class AcquisitionError(RuntimeError):
    """The detector or its file writer reported an error."""


def _wait_for(predicate, timeout: float, what: str) -> None:
    wait_until(predicate, timeout, what, poll=POLL)


class PixelatedDetector(Device):
    """Pixelated (4D-STEM) detector behind ``PFX:DET:`` (``cam1:``, ``HDF1:``).

    Fly mode (``prepare({"mode": "fly", "shape": (ny, nx)})``, then
    ``kickoff``/``complete``/``collect_asset_docs``): the scan generator triggers one frame
    per position; the stream's data key ``{name}_image`` has shape ``[nx, ky, kx]`` per
    event, one event per scan row, so the stream reads as (ny, nx, ky, kx).

    Step mode (``prepare({"mode": "step", "acquire_time": t})``, then
    ``trigger``/``read``): each trigger takes one internally triggered frame into its own
    file (the IOC closes a file when its series ends) and announces it with one
    StreamResource and one StreamDatum; the key has shape ``[ky, kx]`` per event.

    Where the files go: ``prepare`` asks the path provider (``path_provider(name)``) for
    the directory and the file name of the run, unless ``file_stem`` names the file.

    Parameters
    ----------
    prefix : str
        ``PFX:DET:``.
    root_path : str or os.PathLike, optional
        Directory the IOC writes into (as the IOC sees it; the same path here): the
        default provider is ``UUIDPathProvider(root_path)`` (files
        ``{name}-{uuid4}``). Give this or ``path_provider``.
    path_provider : PathProvider, optional
        Asked for the directory and file name stem of each run
        (:class:`~bluestem.devices.paths.PathProvider`).
    pixel_size : float
        Native pixel pitch in m (55 µm: Medipix3/Timepix). Not a PV: it is a property of
        the sensor, recorded in the configuration and used for the angular calibration.
    timeout : float
        Seconds allowed for arming and for a step-mode frame.
    stall_timeout : float
        Watchdog of a fly scan: ``complete`` fails if neither ``NumCaptured_RBV`` nor
        ``DroppedFrames_RBV`` changed for this many seconds while the scan was not
        paused (a detector or scan generator that stopped delivering, an IOC whose CA
        server answers but whose acquisition hangs); until the first frame, ``timeout``
        s are allowed instead (a source may get ready slowly). Longer than a row's dwell
        plus its flyback.

    Attributes
    ----------
    liveness : Liveness
        The CA servers taken as not answering (shared by a session's devices).
    path_provider : PathProvider
        Where the files go.
    file_stem : str
        The file name stem of the run being prepared ("" before ``prepare``).
    """

    cam = Cpt(DetectorCam, "cam1:")
    hdf = Cpt(HDF5Writer, "HDF1:")
    pixel_size = Cpt(Signal, value=PIXEL_SIZE, kind=Kind.config)
    root_path = Cpt(Signal, value="", kind=Kind.config)

    def __init__(
        self,
        prefix: str = "",
        *,
        root_path: str | os.PathLike | None = None,
        path_provider: PathProvider | None = None,
        pixel_size: float = PIXEL_SIZE,
        timeout: float = 30.0,
        stall_timeout: float = 10.0,
        **kwargs,
    ):
        super().__init__(prefix, **kwargs)
        if not pixel_size > 0:
            raise ValueError(f"pixel_size {pixel_size!r} m: allowed > 0")
        if not 0 < stall_timeout <= 3600:
            raise ValueError(f"stall_timeout {stall_timeout!r} s: allowed 0 < s <= 3600")
        if (root_path is None) == (path_provider is None):
            raise ValueError(
                f"root_path={root_path!r}, path_provider={path_provider!r}: allowed one "
                "of them (a directory, or a PathProvider)"
            )
        if path_provider is None:
            path_provider = UUIDPathProvider(root_path)  # type: ignore[arg-type]
        elif not callable(path_provider):
            raise ValueError(f"path_provider={path_provider!r}: allowed a PathProvider")
        self.path_provider = path_provider
        # The directory of the files (the provider's root until a run says otherwise).
        root = root_path if root_path is not None else getattr(path_provider, "root", "")
        self.root_path.put(str(Path(root)) if str(root) else "")
        self.pixel_size.put(float(pixel_size))
        self.timeout = timeout
        self.stall_timeout = float(stall_timeout)
        self.liveness = Liveness()
        self._paused = False
        self._mode = "fly"
        self._stem = ""
        self._chunks: list[int] = []
        self._shape: tuple[int, int] = (1, 1)
        self._batcher: RowBatcher | None = None
        self._bundle: ComposeStreamResourceBundle | None = None
        self._file = ""
        self._finished = False
        self._pending: deque = deque()
        self._step_count = 0

    @property
    def image_key(self) -> str:
        """The data key of the frames: ``{name}_image``."""
        return f"{self.name}_image"

    @property
    def file_stem(self) -> str:
        """The file name stem of the run being prepared ("" before ``prepare``)."""
        return self._stem

    # -- preparation -------------------------------------------------------------------
    def prepare(self, value: dict[str, Any]) -> DeviceStatus:
        """Configure for one run (bluesky's ``prepare``).

        Parameters
        ----------
        value : dict
            ``mode`` ("fly" or "step"); ``shape`` ((ny, nx), fly mode);
            ``acquire_time`` (s, step mode); optionally ``file_stem`` (the file name,
            overriding the path provider's) and ``label`` (asked of the provider as
            ``{name}-{label}``, e.g. ``"dark"``).

        Returns
        -------
        DeviceStatus
            Done when ``FilePath`` (the provider's directory), ``FileName`` and the
            modes are verified.
        """
        self._stem = ""
        mode = value.get("mode", "fly")
        if mode not in ("fly", "step"):
            raise ValueError(f"detector mode {mode!r}: allowed 'fly', 'step'")
        path = resolve_path(self.path_provider, self.name, file_stem=value.get("file_stem"),
                            label=value.get("label"))  # fmt: skip
        stem = path.filename
        self.root_path.put(path.directory)

        def work():
            self.hdf.file_path.set(path.directory).wait(self.timeout)
            self.hdf.file_name.set(stem).wait(self.timeout)
            if mode == "fly":
                self.cam.trigger_mode.set(TriggerMode.EXTERNAL).wait(self.timeout)
            else:
                self.cam.trigger_mode.set(TriggerMode.INTERNAL).wait(self.timeout)
                self.cam.image_mode.set(ImageMode.SINGLE).wait(self.timeout)
                self.hdf.num_capture.set(1).wait(self.timeout)
                if "acquire_time" in value:
                    t = float(value["acquire_time"])
                    self.cam.acquire_period.set(t).wait(self.timeout)
                    self.cam.acquire_time.set(t).wait(self.timeout)

        self._mode, self._stem = mode, stem
        self._shape = tuple(int(s) for s in value.get("shape", (1, 1)))  # type: ignore[assignment]
        self._batcher, self._bundle, self._file, self._chunks = None, None, "", []
        self._finished, self._step_count = False, 0
        self._pending.clear()
        return status_of_thread(self, work, "prepare")

    # -- fly mode ----------------------------------------------------------------------
    def _open_file(self) -> tuple[str, list[int]]:
        """Capture=1 (the IOC refuses an existing file); the file's path and its chunk
        shape (``ChunkShape_RBV``, written by the IOC before ``Capture_RBV`` is 1)."""
        put_checked(self.hdf.capture, 1, timeout=self.timeout)
        _wait_for(lambda: self.hdf.capture_rbv.get(use_monitor=False) == 1, self.timeout,
                  f"{self.hdf.capture_rbv.pvname} not 1")  # fmt: skip
        path = str(self.hdf.full_file_name.get(use_monitor=False))
        raw = self._read(self.hdf.chunk_shape)
        try:
            return path, chunk_shape_of(raw)
        except ValueError as exc:
            raise AcquisitionError(
                f"{self.name}: {self.hdf.chunk_shape.pvname}: {exc} (file {path})"
            ) from None

    def kickoff(self) -> DeviceStatus:
        """Open the file and arm the detector; done when it waits for the scan."""
        ny, nx = self._shape

        def work():
            self._file, self._chunks = self._open_file()
            self._batcher = RowBatcher(ny, nx)
            put_checked(self.cam.acquire, 1, timeout=self.timeout)
            _wait_for(lambda: self.cam.acquire_rbv.get(use_monitor=False) == 1,
                      self.timeout, f"{self.cam.acquire_rbv.pvname} not 1")  # fmt: skip

        return status_of_thread(self, work, "kickoff")

    def _lost(self, why: str) -> AcquisitionError:
        return AcquisitionError(
            f"{self.name}: lost the detector IOC ({why}) while capturing to {self._file or '?'}"
        )

    def _read(self, signal) -> Any:
        """A PV of the IOC's, or :class:`AcquisitionError` naming this detector when the
        IOC went away or stopped answering (whichever of complete() and collect()
        notices first; at once once :attr:`liveness` knows)."""
        why = self.liveness.lost(signal)
        if why is not None:
            raise self._lost(why)
        try:
            return signal.get(use_monitor=False)
        except Exception as exc:
            self.liveness.mark(signal, exc)
            raise self._lost(f"{signal.pvname}: {type(exc).__name__}: {exc}") from exc

    def _counter(self, signal) -> int:
        return int(self._read(signal))

    def _capturing(self) -> bool:
        return self._counter(self.hdf.capture_rbv) != 0

    def _check_writer(self) -> None:
        if self._read(self.hdf.write_status) == WriteStatus.ERROR:
            raise AcquisitionError(
                f"{self.name}: {self._read(self.hdf.write_message)} (file {self._file})"
            )
        if self._read(self.cam.detector_state) == DetectorState.ERROR:
            raise AcquisitionError(f"{self.name}: {self._read(self.cam.message)}")

    def complete(self) -> DeviceStatus:
        """Done when the IOC has closed the file (``Capture_RBV`` back to 0); fails on a
        write error."""

        def work():
            why = self.liveness.lost(self.hdf.capture_rbv)
            if why is not None:  # not even subscribed to: (un)subscribing waits too
                raise self._lost(why)
            # Woken by the Capture_RBV monitor as soon as the file closes; the poll stays
            # for the write-error checks (and a monitor that never comes).
            closed = threading.Event()

            def watch(value=None, **_):
                if value == 0:
                    closed.set()

            token = self.hdf.capture_rbv.subscribe(watch, run=False)
            watchdog = Watchdog(self.stall_timeout, first=self.timeout)
            try:
                while self._capturing():
                    self._check_writer()
                    progress = (self._counter(self.hdf.num_captured),
                                self._counter(self.hdf.dropped_frames))  # fmt: skip
                    if watchdog.stalled(progress, paused=self._paused):
                        raise AcquisitionError(
                            f"{self.name}: no frame for {watchdog.limit:g} s "
                            f"({self.hdf.num_captured.pvname} stuck at {progress[0]}, "
                            f"{progress[1]} dropped) while capturing to {self._file}: the "
                            "detector or the scan stopped delivering (stall_timeout)"
                        )
                    closed.wait(POLL)
            finally:
                self.hdf.capture_rbv.unsubscribe(token)
            self._check_writer()
            self._finished = True

        return status_of_thread(self, work, "complete")

    def _dtype(self):
        """The frames' dtype, from ``cam1:DataType_RBV``."""
        name = self._read(self.cam.data_type)
        try:
            return dtype_of_data_type(name)
        except ValueError as exc:
            raise AcquisitionError(f"{self.name}: {self.cam.data_type.pvname}: {exc}") from None

    def _datum_key(self, shape: list[int]) -> dict:
        dtype = self._dtype()
        return {
            "source": self.hdf.full_file_name.pvname,
            "shape": shape,
            "dtype": "array",
            "dtype_numpy": dtype.str,
            "external": "STREAM:",
        }

    def describe_collect(self) -> dict[str, dict]:
        """``{name}_image``: ``[nx, ky, kx]`` per event (one scan row)."""
        ky, kx = self.cam.frame_shape()
        return {self.image_key: self._datum_key([self._shape[1], ky, kx])}

    def _resource(self, path: str, chunk_shape: list[int]) -> ComposeStreamResourceBundle:
        """The file's StreamResource; ``chunk_shape`` as the IOC published it."""
        from bluestem.frames import FRAMES_PATH

        return ComposeStreamResource()(
            mimetype=MIMETYPE,
            uri=f"file://localhost{os.path.abspath(path)}",
            data_key=self.image_key,
            parameters={"dataset": FRAMES_PATH, "chunk_shape": list(chunk_shape)},
        )

    def collect_asset_docs(self, index: int | None = None):
        """The StreamResource (once), then StreamDatum documents for the scan rows
        completed since the last call (fly mode) or the queued frames (step mode)."""
        if self._mode == "step":
            while self._pending:
                yield self._pending.popleft()
            return
        if not self._file or self._batcher is None:
            return
        if self._bundle is None:
            self._bundle = self._resource(self._file, self._chunks)
            yield "stream_resource", self._bundle.stream_resource_doc
        rows = self._batcher.advance(
            self._counter(self.hdf.num_captured),
            self._counter(self.hdf.dropped_frames),
            finished=self._finished,
        )
        if index is not None and rows is not None:
            rows = (rows[0], min(rows[1], max(index, rows[0])))
        if rows is not None and rows[1] > rows[0]:
            yield (
                "stream_datum",
                self._bundle.compose_stream_datum(
                    indices=StreamRange(start=rows[0], stop=rows[1])
                ),
            )

    def get_index(self) -> int:
        """Rows (fly) or frames (step) announced so far."""
        if self._mode == "step":
            return self._step_count
        return self._batcher.announced if self._batcher is not None else 0

    # -- step mode ---------------------------------------------------------------------
    def trigger(self) -> Status:
        """One internally triggered frame into its own file; done when the file is
        closed."""

        # Documents of a frame whose event a pause abandoned (the RunEngine re-does the
        # step from its checkpoint) are never announced: that file is not in the run.
        self._pending.clear()

        def work():
            k = self._step_count
            self.hdf.file_name.set(f"{self._stem}-{k:06d}").wait(self.timeout)
            path, chunks = self._open_file()
            put_checked(self.cam.acquire, 1, timeout=self.timeout)
            _wait_for(lambda: self.hdf.capture_rbv.get(use_monitor=False) == 0,
                      self.timeout, f"{self.name}: frame {k} not written")  # fmt: skip
            self._check_writer()
            bundle = self._resource(path, chunks)
            self._pending.append(("stream_resource", bundle.stream_resource_doc))
            self._pending.append(
                ("stream_datum", bundle.compose_stream_datum(StreamRange(start=0, stop=1)))
            )
            self._step_count = k + 1

        return status_of_thread(self, work, "trigger")

    def describe(self) -> dict[str, dict]:
        """Step mode: ``{name}_image`` with shape ``[ky, kx]`` per event (external)."""
        ky, kx = self.cam.frame_shape()
        return {**super().describe(), self.image_key: self._datum_key([ky, kx])}

    def pause(self) -> None:
        """The RunEngine paused: the scan holds, so the stall watchdog waits too."""
        self._paused = True

    def resume(self) -> None:
        """The RunEngine resumed: the stall watchdog counts again from now."""
        self._paused = False

    def stage(self) -> list:
        """A new run: every CA server is tried again, the watchdog unpaused."""
        self.liveness.clear()
        self._paused = False
        return super().stage()

    def stop(self, *, success: bool = False) -> None:
        """End an acquisition (a plan's abort/stop, or unstage): the IOC closes the file,
        keeping every frame already taken. Reports, never raises: it runs while a run is
        being ended and must not hide the error that ended it."""
        why = self.liveness.lost(self.cam.acquire_rbv)
        if why is not None:
            logger.error("%s: not stopping the acquisition: %s", self.name, why)
            super().stop(success=success)
            return
        try:
            if self.connected and self.cam.acquire_rbv.get(use_monitor=False) == 1:
                put_checked(self.cam.acquire, 0, timeout=5.0)
        except Exception as exc:
            self.liveness.mark(self.cam.acquire, exc)
            logger.error("%s: could not stop the acquisition: %s", self.name, exc)
        super().stop(success=success)

    def unstage(self) -> list:
        """Stop an acquisition the plan left running (also after a halt), then unstage."""
        self.stop()
        return super().unstage()
