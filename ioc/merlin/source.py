"""Frames from a real (or simulated) Merlin: the frame source of ``bluestem ioc merlin``.

:class:`MerlinSource` is a :class:`~bluestem.ioc.source.FrameSource` whose recipes stream
(:attr:`~bluestem.ioc.source.FrameRecipe.stream`): in the engine's thread it sets the
detector up for the acquisition (frames, exposure, period, counter depth, format,
internal trigger), starts it, stores the acquisition header verbatim in the file, and
yields the frames as they arrive, placed by their frame numbers — a frame the detector
skipped stays missing (counted as dropped), never filled by its neighbour.

A detector that refuses a setting, a broken or cut-off message, a lost connection or a
detector silent for ``stall`` s while it says it is busy fails the acquisition with a
message naming the command and the answer or the stream offset; the frames before it
stay in the file. The connections are then dropped and made again at the next
acquisition, so the IOC carries on once the detector is back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from bluestem.frames.layout import ReservedText

from ..source import FrameBlock, FrameRecipe, Readback, StreamRequest
from .client import MerlinControl, MerlinData

__all__ = ["HEADER_PATH", "MerlinSource", "MerlinStream"]

#: Where the acquisition header goes in the file (and how many bytes are reserved).
HEADER_PATH = "/metadata/merlin/acquisition_header"
HEADER_BYTES = 16384
#: Seconds a data read waits before asking the detector whether it is still busy.
POLL = 0.5


class MerlinSource:
    """A Merlin on ``host``'s command and data ports.

    Parameters
    ----------
    host : str
    command_port, data_port : int
    raw : bool
        Ask for the raw format (``FILEFORMAT 2``, the detector's fastest) or binary.
    timeout : float
        Seconds to connect and for each command's reply.
    stall : float
        Seconds without a frame, while the detector says it is busy, that fail the
        acquisition.
    """

    def __init__(self, host: str, command_port: int = 6341, data_port: int = 6342, *,
                 raw: bool = True, timeout: float = 5.0, stall: float = 10.0):  # fmt: skip
        self.host, self.ports = host, (int(command_port), int(data_port))
        self.raw, self.timeout, self.stall = bool(raw), float(timeout), float(stall)
        self.sensor: tuple[int, int] | None = None
        self.software_version = ""
        self._control: MerlinControl | None = None
        self._data: MerlinData | None = None
        self._lock = threading.Lock()

    # -- connections ------------------------------------------------------------------
    def connect(self) -> tuple[int, int]:
        """Connect both ports (data first: frames go to whoever listens) and read the
        sensor's shape; ``(ky, kx)``. ``OSError`` when the detector does not answer."""
        with self._lock:
            return self._connect()

    def _connect(self) -> tuple[int, int]:
        if self._control is None or self._data is None:
            self._disconnect()
            data = MerlinData(self.host, self.ports[1], timeout=POLL, stall=self.stall)
            data.connect()
            try:
                control = MerlinControl(self.host, self.ports[0], timeout=self.timeout)
                control.connect()
            except BaseException:
                data.close()
                raise
            self._control, self._data = control, data
            self.sensor = (int(control.get("IMAGEY")), int(control.get("IMAGEX")))
            self.software_version = control.get("SOFTWAREVERSION")
        assert self.sensor is not None
        return self.sensor

    def _disconnect(self) -> None:
        for conn in (self._control, self._data):
            if conn is not None:
                conn.close()
        self._control = self._data = None

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    # -- the FrameSource protocol --------------------------------------------------------
    def recipe(self, readback: Readback, *, number: int) -> FrameRecipe:
        det = readback.detector
        shape, binning = tuple(det["shape"]), int(det["binning"])
        if self.sensor is not None and (shape != self.sensor or binning != 1):
            raise ValueError(
                f"frames of {shape[1]}x{shape[0]} binned {binning}: the Merlin reads out "
                f"{self.sensor[1]}x{self.sensor[0]}, unbinned (allowed: DET:cam1:SizeX "
                f"{self.sensor[1]}, SizeY {self.sensor[0]}, BinX 1)"
            )
        params = {
            "source": "merlin", "host": self.host, "command_port": self.ports[0],
            "data_port": self.ports[1], "file_format": "raw" if self.raw else "binary",
        }  # fmt: skip
        return FrameRecipe(
            prepare=_no_render,
            parameters=params,
            metadata={
                "merlin": {
                    **params,
                    "software_version": self.software_version,
                    "acquisition_header": ReservedText(HEADER_BYTES),
                }
            },
            stream=lambda request: self.start(request, int(det["counter_depth"])),
        )

    def start(self, request: StreamRequest, depth: int) -> MerlinStream:
        """Set the detector up for ``request``, start it and return its frames (engine
        thread). Any failure drops the connections (made again next time) and raises."""
        with self._lock:
            try:
                self._connect()
                control, data = self._control, self._data
                assert control is not None and data is not None
                data.drain()  # what a stopped acquisition still sent
                ms = max(request.exposure, 1e-6) * 1e3
                for name, value in (
                    ("NUMFRAMESTOACQUIRE", request.n_frames), ("COUNTERDEPTH", depth),
                    ("ACQUISITIONTIME", round(ms, 6)),
                    ("ACQUISITIONPERIOD", round(max(request.period * 1e3, ms), 6)),
                    ("CONTINUOUSRW", 0), ("TRIGGERSTART", 0), ("TRIGGERSTOP", 0),
                    ("NUMFRAMESPERTRIGGER", 1), ("FILEFORMAT", 2 if self.raw else 0),
                    ("FILEENABLE", 0), ("RUNHEADLESS", 1),
                ):  # fmt: skip
                    control.set(name, value)
                control.cmd("STARTACQUISITION")
                deadline = time.monotonic() + self.timeout
                while True:  # a timeout before its first byte leaves the stream in step
                    try:
                        text, header = data.read_acquisition_header()
                        break
                    except TimeoutError:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"the Merlin sent no acquisition header "
                                               f"within {self.timeout:g} s") from None  # fmt: skip
            except BaseException:
                self._disconnect()
                raise
        request.annotate(HEADER_PATH, text)
        return MerlinStream(self, control, data, request.n_frames, header)

    def lost(self, control: MerlinControl) -> None:
        """The stream of ``control`` failed: drop the connections if still those."""
        with self._lock:
            if self._control is control:
                self._disconnect()


def _no_render():
    raise RuntimeError("a Merlin recipe streams: the instrument calls its stream()")


class MerlinStream:
    """The frames of one Merlin acquisition (a :class:`~bluestem.ioc.source.FrameStream`)."""

    def __init__(self, source: MerlinSource, control: MerlinControl, data: MerlinData,
                 n_frames: int, header: dict[str, Any]):  # fmt: skip
        self.source, self.control, self.data = source, control, data
        self.n_frames, self.header = int(n_frames), header
        self.received = 0
        self._stopped = threading.Event()

    def stop(self) -> None:
        """End early: the detector is told at once (off the caller's thread)."""
        if not self._stopped.is_set():
            self._stopped.set()
            threading.Thread(target=self._send_stop, daemon=True).start()

    def _send_stop(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            self.control.cmd("STOPACQUISITION")

    def blocks(self) -> Iterator[FrameBlock]:
        last, quiet_since = 0, time.monotonic()
        try:
            while last < self.n_frames:
                try:
                    batch = self.data.read_frames(self.n_frames - last)
                except TimeoutError:
                    if self._stopped.is_set() or self.control.get("DETECTORSTATUS") == "0":
                        return  # stopped, or the detector skipped the last frames
                    if time.monotonic() - quiet_since > self.source.stall:
                        raise TimeoutError(
                            f"the Merlin sent no frame for {self.source.stall:g} s after "
                            f"frame {last} while DETECTORSTATUS said busy") from None  # fmt: skip
                    continue
                if batch is None:
                    raise ConnectionError(f"the Merlin closed the data connection after "
                                          f"frame {last} of {self.n_frames}")  # fmt: skip
                quiet_since = time.monotonic()
                numbers = batch.numbers
                bad = (numbers <= last) | (numbers > self.n_frames)
                if bad.any() or np.any(np.diff(numbers) <= 0):
                    wrong = int(numbers[np.argmax(bad)] if bad.any() else numbers[-1])
                    raise ValueError(f"the Merlin sent frame number {wrong} after {last} (allowed"
                                     f" {last + 1}..{self.n_frames}, increasing)")  # fmt: skip
                # Runs of consecutive numbers, each its own block: a gap stays a gap.
                cuts = np.flatnonzero(np.diff(numbers) != 1) + 1
                for run in np.split(np.arange(len(numbers)), cuts):
                    yield FrameBlock(int(numbers[run[0]]) - 1, batch.frames[run[0] : run[-1] + 1])
                self.received += len(numbers)
                last = int(numbers[-1])
        except BaseException:
            self.source.lost(self.control)
            raise
