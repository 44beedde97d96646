"""Where the frames of announced blocks are reduced: in this process, or on Dask workers.

A *block* is what one ``stream_datum`` announces: a contiguous range of frames of one raw
file, at a known place in the scan. :class:`LocalBlocks` reads each block with
:class:`bluestem.frames.FrameReader` (direct chunk reads, checksums verified) and adds it
to one :class:`bluestem.reduce.Reducer`. :class:`DaskBlocks` sends chunk-aligned ranges of
each block to a Dask cluster, where :func:`reduce_range` reduces them into partial results,
and combines those at the end. A frame's reduction never depends on the block it arrived
in, so both give bitwise identical images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Block",
    "DaskBlocks",
    "LocalBlocks",
    "covered",
    "frames_in",
    "open_reader",
    "received_runs",
    "reduce_range",
]

# Frames of one read in the local path: whole chunks, a few MiB, so the snapshot the live
# images see advances smoothly within a big block.
READ_FRAMES = 256
# How long a block whose chunks are not yet visible (SWMR: the writer's flush follows its
# counters) is retried before the reduction gives up on it.
NOT_WRITTEN_TIMEOUT = 10.0
# Raw files kept open at once (a fly scan has one; a step scan one per frame).
OPEN_FILES = 4
# Reads of a chunk whose checksum fails before it counts as corrupt (see _read_received).
TORN_RETRIES = 5
# How long an announced frame the received map does not show yet is waited for: longer
# than the writer's flush interval (0.5 s), so only dropped and late frames exceed it.
RECEIVED_GRACE = 0.6


@dataclass(frozen=True)
class Block:
    """Frames ``first .. first + count - 1`` of ``path`` are scan positions
    ``position .. position + count - 1`` (flat, row-major)."""

    path: str
    dataset: str
    first: int
    count: int
    position: int
    received_at: float = 0.0
    datum: str = ""  # the announcing stream_datum's uid


def covered(blocks, size: int) -> np.ndarray:
    """Flat bool mask of the ``size`` scan positions the ``blocks`` cover."""
    mask = np.zeros(size, dtype=bool)
    for block in blocks:
        mask[block.position : block.position + block.count] = True
    return mask


def frames_in(blocks) -> int:
    """Frames the ``blocks`` announce."""
    return sum(block.count for block in blocks)


def received_runs(received: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], received.view(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def open_reader(path: str, dataset: str, verify: bool, threads: int = 2):
    """A FrameReader for a block's file: a bluestem raw-frame file (FrameWriter layout)."""
    from bluestem.frames import FRAMES_PATH, FrameReader

    if dataset != FRAMES_PATH:
        raise ValueError(
            f"{path}: dataset {dataset!r} is not a bluestem raw-frame dataset "
            f"(allowed: {FRAMES_PATH!r}, as written by the detector IOC)"
        )
    return FrameReader(path, verify=verify, threads=threads)


def _read_received(
    reader, first: int, count: int, *, wait: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Frames and received map of a range, waiting while the writer's flush catches up
    (``wait=False``: raise ``FramesNotWritten`` at once).

    With ``wait``, frames the ``received`` map does not show yet are read again for up to
    ``RECEIVED_GRACE``: the writer counts a frame as written (NumCaptured_RBV) before its
    flush makes the map visible to this reader. Frames still not received after that are
    dropped or late, and returned as such.

    A checksum mismatch is read again a few times first: a chunk written with a gap is
    rewritten in place when its late frame arrives, and a read during that rewrite sees
    half of each. A chunk that is really corrupt fails every time, and is raised.
    """
    from bluestem.frames import ChecksumError, FramesNotWritten

    now = time.monotonic()
    deadline, grace = now + NOT_WRITTEN_TIMEOUT, now + RECEIVED_GRACE
    torn = 0
    while True:
        try:
            received = reader.received(first, count)
            frames = reader.read(first, count)
            if not wait or received.all() or time.monotonic() > grace:
                return frames, received
        except FramesNotWritten:
            if not wait or time.monotonic() > deadline:
                raise
        except ChecksumError:
            torn += 1
            if torn > TORN_RETRIES:
                raise
        time.sleep(0.005)
        reader.refresh()


def _add_received(reducer, frames: np.ndarray, received: np.ndarray, position: int) -> int:
    """Add only frames the detector delivered: a dropped frame stays NaN, never zero."""
    if received.all():
        reducer.add(position, frames)
        return len(frames)
    done = 0
    for a, b in received_runs(received):
        reducer.add(position + a, frames[a:b])
        done += b - a
    return done


class LocalBlocks:
    """Reduce blocks in this process (one thread at a time calls :meth:`reduce`).

    Parameters
    ----------
    reducer : bluestem.reduce.Reducer
    verify : bool
        Verify every chunk's fletcher32 checksum as it is read.
    on_progress : callable, optional
        Called after each read with ``(frames, latest_frame)``.
    threads : int
        Threads for the kernels and the checksums of the thread calling :meth:`reduce`.
        Live, 1: the detector's own frame path needs the other cores, and one core
        reduces many times faster than frames arrive (see docs/live.md).
    """

    def __init__(self, reducer, *, verify: bool = True, on_progress=None, threads: int = 1):
        self.reducer = reducer
        self.verify = verify
        self.on_progress = on_progress
        self.threads = int(threads)
        self._readers: dict[str, object] = {}
        self.missing: list[tuple[Block, int, int]] = []  # (block, start, stop) not received
        # A fly scan's file holds the whole scan in order (frame i is position i): once
        # its first block is announced the thread may read on ahead of the announcements
        # (follow), and ``frontier`` is how far the file has been reduced.
        self._whole: Block | None = None
        self.frontier = 0

    def _reader(self, path: str, dataset: str):
        reader = self._readers.pop(path, None)
        if reader is None:
            if len(self._readers) >= OPEN_FILES:  # step scans: one file per frame
                self._readers.pop(next(iter(self._readers))).close()
            reader = open_reader(path, dataset, self.verify, self.threads)
        self._readers[path] = reader  # most recently used last
        return reader

    def reduce(self, block: Block) -> None:
        """Read and reduce one block, ``READ_FRAMES`` at a time (what :meth:`follow` has
        reduced already is skipped)."""
        import numba

        # numba's thread count is per calling thread: this one only.
        numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        reader = self._reader(block.path, block.dataset)
        start = 0
        if block.first == block.position:
            self.watch(block)
        if self._whole is not None and self._whole.path == block.path:
            start = min(block.count, max(0, self.frontier - block.first))
        for offset in range(start, block.count, READ_FRAMES):
            count = min(READ_FRAMES, block.count - offset)
            self._process(reader, block, offset, count, wait=True)
        if self._whole is not None and self._whole.path == block.path:
            self.frontier = max(self.frontier, block.first + block.count)

    def watch(self, block: Block) -> None:
        """Allow :meth:`follow` on ``block``'s file when it holds the whole scan in order
        (frame i is position i: a fly raster's file). Called from the reduction thread."""
        if self._whole is not None and self._whole.path == block.path:
            return
        reader = self._reader(block.path, block.dataset)
        if reader.total == self.reducer.filled.size:
            self._whole, self.frontier = block, 0

    def follow(self) -> int:
        """Reduce frames the writer has put in the file beyond the last announced block
        (a fly scan's file only); returns how many were handled (0: nothing new yet)."""
        from bluestem.frames import FramesNotWritten

        whole = self._whole
        if whole is None:
            return 0
        reader = self._reader(whole.path, whole.dataset)
        count = min(READ_FRAMES, reader.total - self.frontier)
        if count <= 0:
            return 0
        reader.refresh()
        # Only as far as the received map goes without a gap: a frame not shown yet may be
        # unflushed, dropped or late, which only its announcement can tell apart.
        received = reader.received(self.frontier, count)
        count = count if received.all() else int(np.argmin(received))
        if count == 0:
            return 0
        try:
            self._process(reader, whole, self.frontier - whole.first, count, wait=False)
        except FramesNotWritten as exc:
            if exc.available <= 0:
                return 0
            count = exc.available
            self._process(reader, whole, self.frontier - whole.first, count, wait=False)
        self.frontier += count
        return count

    def _process(self, reader, block: Block, offset: int, count: int, *, wait: bool) -> None:
        frames, received = _read_received(reader, block.first + offset, count, wait=wait)
        _add_received(self.reducer, frames, received, block.position + offset)
        for a, b in received_runs(~received):
            self.missing.append((block, offset + a, offset + b))
        if self.on_progress is not None and received.any():
            last = int(np.flatnonzero(received)[-1])
            self.on_progress(int(received.sum()), frames[last])

    def reduce_late(self) -> int:
        """Frames missing when their block was read but received since (late frames)."""
        done, still = 0, []
        for block, a, b in self.missing:
            reader = self._reader(block.path, block.dataset)
            reader.refresh()
            frames, received = _read_received(reader, block.first + a, b - a)
            done += _add_received(self.reducer, frames, received, block.position + a)
            still.extend((block, a + s, a + e) for s, e in received_runs(~received))
        self.missing = still
        return done

    def result(self):
        """The reducer holding every block."""
        return self.reducer

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


def reduce_range(
    spec: dict,
    scan_shape,
    path: str,
    dataset: str,
    first: int,
    count: int,
    position: int,
    verify: bool = True,
):
    """Reduce frames ``first .. first + count - 1`` of ``path`` (a Dask task).

    Returns a :class:`bluestem.reduce.ReducedPart` holding only those positions, for
    :meth:`bluestem.reduce.Reducer.combine`. Frames not received are left out.
    """
    from bluestem.reduce import Reducer, ReductionSpec

    reducer = Reducer(ReductionSpec.from_dict(spec), tuple(scan_shape))
    with open_reader(path, dataset, verify) as reader:
        for offset in range(0, count, READ_FRAMES):
            n = min(READ_FRAMES, count - offset)
            frames, received = _read_received(reader, first + offset, n)
            _add_received(reducer, frames, received, position + offset)
    return reducer.to_part()


class DaskBlocks:
    """Reduce blocks on a Dask cluster, over chunk-aligned frame ranges.

    Parameters
    ----------
    client : distributed.Client
    spec : bluestem.reduce.ReductionSpec
    scan_shape : (ny, nx)
    task_frames : int
        Frames per task (rounded to whole chunks of the file by the caller's blocks).
    """

    def __init__(self, client, spec, scan_shape, *, task_frames: int = 4096, verify=True):
        self.client = client
        self.spec = spec
        self.scan_shape = tuple(scan_shape)
        self.task_frames = int(task_frames)
        self.verify = verify
        self._futures: list = []

    def reduce(self, block: Block) -> None:
        spec = self.spec.to_dict()
        for offset in range(0, block.count, self.task_frames):
            n = min(self.task_frames, block.count - offset)
            self._futures.append(
                self.client.submit(
                    reduce_range,
                    spec,
                    self.scan_shape,
                    block.path,
                    block.dataset,
                    block.first + offset,
                    n,
                    block.position + offset,
                    self.verify,
                    pure=False,
                )
            )

    def reduce_late(self) -> int:
        return 0  # every task reads the file once the run is complete (offline only)

    def result(self):
        """Gather the partial results and combine them into one reducer."""
        from bluestem.reduce import Reducer

        parts = self.client.gather(self._futures)
        return Reducer.combine(parts)

    def close(self) -> None:
        self._futures.clear()
