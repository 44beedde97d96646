"""FrameWriter: frames from a detector into one checksummed, SWMR-readable HDF5 file."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bluestem.frames._chunks import ChunkGrid
from bluestem.frames._fletcher import fletcher32_u8

__all__ = ["COMPRESSIONS", "FrameWriter", "WriteSummary"]

COMPRESSIONS = (None, "bitshuffle-lz4")
_STOP = object()


@dataclass(frozen=True)
class _Text:
    """A reserved text to fill (queued like frames: the writer thread owns the file)."""

    path: str
    data: bytes


@dataclass(frozen=True)
class WriteSummary:
    """What a closed (or aborted) FrameWriter wrote.

    ``dropped`` is ``frames_expected - frames_written``: frames never submitted stay zeros
    with 0 in the ``received`` map. ``bytes_written`` is the stored size of the frames
    dataset (compressed size when compressed, checksums included).
    """

    path: str
    frames_expected: int
    frames_written: int
    dropped: int
    seconds: float
    bytes_written: int


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _positive_shape(name: str, value: Any, ndims: tuple[int, ...]) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"{name}={value!r} must be a tuple of {ndims} positive ints") from None
    if len(shape) not in ndims or any(v <= 0 for v in shape):
        raise ValueError(
            f"{name}={value!r} must have {' or '.join(map(str, ndims))} entries, each >= 1"
        )
    return shape


class FrameWriter:
    """Write detector frames to one HDF5 file per acquisition.

    Parameters
    ----------
    path : str or os.PathLike
        File to create; it must not exist (files are never overwritten).
    scan_shape : tuple of int
        ``(ny, nx)`` for a scan (4-D dataset) or ``(n,)`` for a series (3-D dataset).
    frame_shape : tuple of int
        ``(ky, kx)`` of one frame.
    dtype : numpy dtype
        Pixel type; submitted frames must have exactly this dtype.
    compression : {None, "bitshuffle-lz4"}
        None writes checksummed chunks directly (fast path); "bitshuffle-lz4" goes
        through the HDF5 filter pipeline. Both carry the fletcher32 filter.
    metadata : mapping, optional
        Nested dicts ("scan", "detector", "microscope", ...) stored as groups/attributes
        under ``/metadata``.
    calibration : mapping, optional
        ``{"scan_step": (dy, dx) in m, "angle_per_pixel": rad}`` for the dim vectors.
    queue_depth : int
        Submissions buffered before :meth:`submit` blocks (backpressure).
    flush_interval : float
        Seconds between SWMR flushes while frames arrive (also flushed at every row).
    sync_interval : float or None
        Power-loss safety: at a flush at least this many seconds after the last sync,
        ``fsync`` the file between writing the frames and writing the ``received`` map
        that claims them, so that after a power cut the map on disk never claims a
        frame the disk does not hold; 0 syncs at every flush (every row), None (the
        default) never: what the page cache holds is lost in a power cut. Also synced at
        close. ``bluestem ioc sim --sync-interval`` sets it for the IOC.
    chunk_frames : int, optional
        Frames of one scan row per HDF5 chunk; default about 1 MiB per chunk.

    Notes
    -----
    One producer thread should call :meth:`submit`; the writing happens on a private
    thread. Ownership of a submitted array passes to the writer: do not modify it after
    ``submit`` returns.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        scan_shape: tuple[int, ...],
        frame_shape: tuple[int, int],
        dtype: Any,
        compression: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        calibration: Mapping[str, Any] | None = None,
        queue_depth: int = 8,
        flush_interval: float = 0.5,
        sync_interval: float | None = None,
        chunk_frames: int | None = None,
    ) -> None:
        self.path = str(path)
        self.scan_shape = _positive_shape("scan_shape", scan_shape, (1, 2))
        self.frame_shape = _positive_shape("frame_shape", frame_shape, (2,))
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "biuf":
            raise ValueError(f"dtype={self.dtype} must be a numeric (int, uint, float) dtype")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression={compression!r} is not one of {COMPRESSIONS}")
        if int(queue_depth) < 1:
            raise ValueError(f"queue_depth={queue_depth} must be >= 1")
        if not float(flush_interval) > 0:
            raise ValueError(f"flush_interval={flush_interval} must be > 0 s")
        if sync_interval is not None and not 0 <= float(sync_interval) <= 3600:
            raise ValueError(f"sync_interval={sync_interval} s: allowed None (never) or 0..3600 s")
        self.compression = compression
        self.metadata = dict(metadata or {})
        self.calibration = dict(calibration or {})
        self.queue_depth = int(queue_depth)
        self.flush_interval = float(flush_interval)
        self.sync_interval = None if sync_interval is None else float(sync_interval)
        self.syncs = 0
        self.grid = ChunkGrid(self.scan_shape, self.frame_shape, self.dtype, chunk_frames)
        self.error: BaseException | None = None
        self._file = None
        self._frames = None
        self._received_ds = None
        self._received = np.zeros(self.scan_shape, dtype=np.uint8)
        self._queue: queue.Queue = queue.Queue(maxsize=self.queue_depth)
        self._thread: threading.Thread | None = None
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._num_written = 0
        self._state = "new"
        self._t0 = 0.0
        self._staged: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._written: set[tuple[int, int]] = set()
        self._row_count = np.zeros(self.grid.nrows, dtype=np.int64)
        self._newest = -1
        self._dirty = False
        self._last_flush = 0.0
        self._last_sync = 0.0

    # -- public API --------------------------------------------------------------------

    @property
    def frames_expected(self) -> int:
        """Number of frames the file has room for."""
        return self.grid.total

    @property
    def num_written(self) -> int:
        """Frames written to the file so far (thread-safe read)."""
        with self._lock:
            return self._num_written

    def open(self) -> None:
        """Create the file, switch it to SWMR mode and start the writer thread.

        Raises
        ------
        FileExistsError
            The file exists (it is never overwritten).
        FileNotFoundError, PermissionError
            The directory is missing or not writable.
        """
        if self._state != "new":
            raise RuntimeError(f"FrameWriter for {self.path} is already {self._state}")
        from bluestem.frames.layout import create_file, create_layout

        self._file = create_file(self.path)
        try:
            self._frames, self._received_ds = create_layout(
                self._file,
                scan_shape=self.scan_shape,
                frame_shape=self.frame_shape,
                dtype=self.dtype,
                chunk_shape=self.grid.chunk_shape,
                compression=self.compression,
                metadata=self.metadata,
                calibration=self.calibration,
                settings=self._settings(),
            )
            self._file.swmr_mode = True
        except BaseException:
            self._file.close()
            os.unlink(self.path)  # our own half-made file, not user data
            raise
        self._t0 = self._last_flush = time.monotonic()
        self._state = "open"
        self._thread = threading.Thread(target=self._run, name="FrameWriter", daemon=True)
        self._thread.start()

    def submit(self, first: int, frames: np.ndarray) -> None:
        """Queue ``frames`` (n, ky, kx) for flat scan indices ``first .. first+n-1``.

        Any index order is accepted; blocks while the queue is full. Raises the writer
        thread's error if it failed; a refused submission changes nothing in the file.
        """
        if self.error is not None:
            raise self.error
        if self._state != "open":
            raise RuntimeError(f"submit() on a FrameWriter that is {self._state}, not open")
        if not isinstance(frames, np.ndarray):
            raise TypeError(f"frames must be a numpy array, not {type(frames).__name__}")
        if frames.ndim == 2:
            frames = frames[np.newaxis]
        if frames.ndim != 3 or frames.shape[1:] != self.frame_shape:
            raise ValueError(
                f"frames shape {frames.shape} must be (n, {self.frame_shape[0]}, "
                f"{self.frame_shape[1]})"
            )
        if frames.dtype != self.dtype:
            raise TypeError(f"frames dtype {frames.dtype} must be {self.dtype}")
        first = int(first)
        n = frames.shape[0]
        if first < 0 or first + n > self.grid.total:
            raise ValueError(
                f"indices {first}..{first + n - 1} out of range: allowed 0..{self.grid.total - 1}"
            )
        if n:
            self._queue.put((first, frames))
        if self.error is not None:
            raise self.error

    def fill_text(self, path: str, text: str | bytes) -> None:
        """Fill the :class:`~bluestem.frames.layout.ReservedText` dataset at ``path``
        (absolute, e.g. ``/metadata/merlin/acquisition_header``) with ``text``, in order
        with the frames submitted before. A text longer than the dataset is cut to fit
        and ends ``[cut]``; a path that is not a reserved text fails the writer."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        if self._state != "open":
            raise RuntimeError(f"fill_text() on a FrameWriter that is {self._state}, not open")
        self._queue.put(_Text(str(path), data))

    def close(self) -> WriteSummary:
        """Drain the queue, write incomplete chunks (zeros for missing frames), flush,
        close and make the file read-only. Re-raises the writer thread's error."""
        return self._finish(abort=False)

    def abort(self) -> WriteSummary:
        """Stop early: discard what is still queued, keep what was written, close read-only."""
        return self._finish(abort=True)

    def __enter__(self) -> FrameWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._state != "open":
            return
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- internals ---------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {
            "compression": self.compression or "none",
            "checksum": "fletcher32",
            "write_path": "direct_chunk" if self.compression is None else "filter_pipeline",
            "chunk_shape": self.grid.chunk_shape,
            "queue_depth": self.queue_depth,
            "flush_interval_s": self.flush_interval,
            "sync_interval_s": -1.0 if self.sync_interval is None else self.sync_interval,
        }

    def _finish(self, *, abort: bool) -> WriteSummary:
        if self._state != "open":
            raise RuntimeError(f"FrameWriter for {self.path} is {self._state}, not open")
        self._state = "closing"
        if abort:
            self._abort.set()
        self._queue.put(_STOP)
        self._thread.join()
        try:
            storage = self._frames.id.get_storage_size()
        finally:
            self._file.close()
            if self.sync_interval is not None:
                _fsync_path(self.path)  # the closed file's last metadata too
            os.chmod(self.path, 0o444)
            self._state = "closed"
        written = int(self._received.sum())
        summary = WriteSummary(
            path=self.path,
            frames_expected=self.grid.total,
            frames_written=written,
            dropped=self.grid.total - written,
            seconds=time.monotonic() - self._t0,
            bytes_written=int(storage),
        )
        if self.error is not None:
            raise self.error
        return summary

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.flush_interval)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if self.error is not None or self._abort.is_set():
                continue  # drain so that submit never blocks on a dead writer
            try:
                if isinstance(item, _Text):
                    self._fill(item)
                elif item is not None:
                    self._place(*item)
                if self._dirty and time.monotonic() - self._last_flush >= self.flush_interval:
                    self._flush()
            except BaseException as exc:
                self.error = exc
        if self.error is None:
            try:
                for key in sorted(self._staged):
                    self._write_chunk(key)
                self._flush()
            except BaseException as exc:
                self.error = exc

    def _fill(self, item: _Text) -> None:
        dataset = self._file[item.path]
        size = dataset.shape[0]
        data = item.data if len(item.data) <= size else item.data[: size - 5] + b"[cut]"
        buf = np.zeros(size, np.uint8)
        buf[: len(data)] = np.frombuffer(data, np.uint8)
        dataset[...] = buf
        self._dirty = True

    def _place(self, first: int, frames: np.ndarray) -> None:
        grid = self.grid
        k = 0
        n = frames.shape[0]
        while k < n:
            key, pos, count = grid.locate(first + k, n - k)
            if key in self._written:
                self._reload(key)
            stage = self._staged.get(key)
            if stage is None:
                stage = self._staged[key] = grid.new_buffer()
            buf, filled = stage
            grid.view(buf)[pos : pos + count] = frames[k : k + count]
            filled[pos : pos + count] = True
            if filled[: grid.valid(key)].all():
                self._write_chunk(key)
            k += count
        self._newest = max(self._newest, first + n - 1)
        self._write_stale()

    def _write_stale(self) -> None:
        # A chunk still incomplete long after newer frames arrived most likely holds a
        # dropped frame: write it now (zeros for the gap) so SWMR readers see its frames
        # and memory stays bounded. Should the frame come after all, it is merged in by
        # a read-modify-write.
        horizon = self._newest - self.grid.stale_frames
        for key in [k for k in self._staged if self.grid.frames_of(k)[-1] < horizon]:
            self._write_chunk(key)

    def _reload(self, key: tuple[int, int]) -> None:
        # Rare path: a late frame for a chunk already on disk. Read it back (through the
        # filter pipeline, which verifies its checksum), stage it, and rewrite it whole.
        grid = self.grid
        buf, filled = grid.new_buffer()
        valid = grid.valid(key)
        grid.view(buf)[:valid] = self._frames[grid.selection(key)]
        filled[:valid] = self._received[grid.received_selection(key)].astype(bool)
        self._staged[key] = (buf, filled)
        self._written.discard(key)

    def _write_chunk(self, key: tuple[int, int]) -> None:
        grid = self.grid
        buf, filled = self._staged.pop(key)
        valid = grid.valid(key)
        if self.compression is None:
            body = buf[: grid.chunk_nbytes]
            buf[grid.chunk_nbytes :] = np.array([fletcher32_u8(body)], dtype="<u4").view(np.uint8)
            self._frames.id.write_direct_chunk(grid.offset(key), buf, filter_mask=0)
        else:
            self._frames[grid.selection(key)] = grid.view(buf)[:valid]
        self._written.add(key)
        rsel = grid.received_selection(key)
        before = self._received[rsel].copy()
        after = np.maximum(before, filled[:valid].astype(np.uint8))
        self._received[rsel] = after
        new = int(after.sum() - before.sum())
        self._dirty = True
        if new:
            with self._lock:
                self._num_written += new
            row = key[0]
            self._row_count[row] += new
            if self._row_count[row] == grid.row_len:
                self._flush()

    def _flush(self) -> None:
        # Frames first, so that the map never claims a frame whose chunk or index entry
        # is not on disk: direct chunk writes reach the file at once but their index
        # entries wait in the metadata cache, while the map's chunk may be written
        # through any time (always, once it outgrows the chunk cache).
        self._frames.flush()
        if self.sync_interval is not None and (
            time.monotonic() - self._last_sync >= self.sync_interval
        ):
            self._sync()
        self._received_ds[...] = self._received
        self._received_ds.flush()
        self._dirty = False
        self._last_flush = time.monotonic()

    def _sync(self) -> None:
        # What the file holds now reaches the disk before the map that claims it is
        # written: after a power cut the map may lag the frames, never lead them.
        os.fsync(self._file.id.get_vfd_handle())
        self.syncs += 1
        self._last_sync = time.monotonic()
