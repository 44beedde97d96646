"""Where the frames of announced blocks are reduced: in this process, or on Dask workers.

Every executor has the interface of :class:`ReductionExecutor`, which is all
:class:`bluestem.callbacks.LiveReduction` knows of it: :meth:`~ReductionExecutor.reduce`
a block, :meth:`~ReductionExecutor.result` at the end, and optional capabilities whose
defaults do nothing (following a file ahead of its announcements, partial images for the
live display, progress callbacks).

:class:`LocalExecutor` reads each block with :class:`bluestem.frames.FrameReader` (direct
chunk reads, checksums verified) and adds it to one :class:`bluestem.reduce.Reducer`.
:class:`DaskExecutor` sends chunk-aligned ranges of each block to a Dask cluster, where
:func:`reduce_range` reduces them into partial results, and combines those at the end. A
frame's reduction never depends on the block it arrived in, so both give bitwise
identical images.

Importing this module loads neither numba nor dask: numba loads when a
:class:`LocalExecutor` is made for a spec (or reduces), dask with the client a
:class:`DaskExecutor` is given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from bluestem.reduce.blocks import (
    READ_FRAMES,
    Block,
    add_received,
    covered,
    frames_in,
    open_reader,
    read_received,
    received_runs,
)

__all__ = [
    "OPEN_FILES",
    "Block",
    "DaskExecutor",
    "LocalExecutor",
    "ReductionExecutor",
    "covered",
    "frames_in",
    "reduce_range",
]

# Raw files kept open at once (a fly scan has one; a step scan one per frame).
OPEN_FILES = 4


class ReductionExecutor(ABC):
    """The interface of an executor: what the live reduction calls, and nothing else.

    One thread (the live reduction's worker) calls :meth:`watch`, :meth:`follow`,
    :meth:`reduce` and :meth:`reduce_late`; :meth:`live_images` may be called from any
    thread; :meth:`result` and :meth:`close` once the worker is done.

    Subclasses implement :meth:`reduce` and :meth:`result`; every other method has a
    default that does nothing, for an executor without the capability.

    Attributes
    ----------
    on_progress : callable or None
        Set by the caller; an executor that can report progress calls it from its
        reducing thread with ``(frames, latest_frame)`` after each read. Default None.
    reads_ahead : bool
        True when :meth:`follow` may reduce frames before their announcement, so that
        :meth:`result` can hold frames a run cut off never announced (the caller then
        reduces the announced blocks again, alone, with a new executor). Default False.
    """

    on_progress: Callable[[int, np.ndarray], None] | None = None
    reads_ahead: bool = False

    def watch(self, block: Block) -> None:  # noqa: B027 (an optional capability)
        """A file whose frames :meth:`follow` may read ahead, from ``block`` on (a fly
        raster's file, announced by its stream resource). Default: ignored."""

    def follow(self) -> int:
        """Reduce frames written beyond the last announced block; returns how many were
        handled (0, false: nothing new, or the executor cannot). Default: 0."""
        return 0

    @abstractmethod
    def reduce(self, block: Block) -> None:
        """Reduce the frames of one announced block (or send them to be reduced)."""

    def reduce_late(self) -> int:
        """Reduce frames missing when their block was read but received since; returns
        how many. Called once, after the last block. Default: 0."""
        return 0

    @abstractmethod
    def result(self):
        """The :class:`bluestem.reduce.Reducer` holding every reduced block."""

    def live_images(self) -> dict[str, np.ndarray]:
        """The images so far (a copy, safe from any thread), for the live display.
        Default: ``{}`` (an executor whose partial results are elsewhere)."""
        return {}

    def close(self) -> None:  # noqa: B027 (an optional capability)
        """Release files and results. Default: nothing to release."""


class LocalExecutor(ReductionExecutor):
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

    Attributes
    ----------
    missing : list of (Block, int, int)
        ``(block, start, stop)`` ranges of blocks not received when read (dropped or
        late frames), offsets within the block.
    frontier : int
        How far the followed file has been reduced (frames).
    """

    reads_ahead = True

    def __init__(self, reducer, *, verify: bool = True, on_progress=None, threads: int = 1):
        self.reducer = reducer
        self.verify = verify
        self.on_progress = on_progress
        self.threads = int(threads)
        self._readers: dict[str, object] = {}
        self.missing: list[tuple[Block, int, int]] = []
        # A fly scan's file holds the whole scan in order (frame i is position i): once
        # it is watched the thread may read on ahead of the announcements (follow), and
        # ``frontier`` is how far the file has been reduced.
        self._whole: Block | None = None
        self.frontier = 0

    @classmethod
    def for_spec(cls, spec, scan_shape, *, verify: bool = True, threads: int = 1):
        """A local executor with a new :class:`bluestem.reduce.Reducer` for ``spec`` and
        ``scan_shape`` (numba loads here, when a run is reduced, not at import)."""
        from bluestem.reduce.reducer import Reducer

        return cls(Reducer(spec, tuple(scan_shape)), verify=verify, threads=threads)

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
        (frame i is position i: a fly raster's file)."""
        if self._whole is not None and self._whole.path == block.path:
            return
        reader = self._reader(block.path, block.dataset)
        if reader.total == self.reducer.filled.size:
            self._whole, self.frontier = block, 0

    def follow(self) -> int:
        """Reduce frames the writer has put in the watched file beyond the last announced
        block; returns how many were handled (0: nothing new yet, or no file watched)."""
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
        frames, received = read_received(reader, block.first + offset, count, wait=wait)
        add_received(self.reducer, frames, received, block.position + offset)
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
            frames, received = read_received(reader, block.first + a, b - a)
            done += add_received(self.reducer, frames, received, block.position + a)
            still.extend((block, a + s, a + e) for s, e in received_runs(~received))
        self.missing = still
        return done

    def result(self):
        """The reducer holding every block."""
        return self.reducer

    def live_images(self) -> dict[str, np.ndarray]:
        """The reducer's images so far (a copy, under the reducer's own lock)."""
        return self.reducer.images()

    def close(self) -> None:
        """Close the raw files."""
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
    from bluestem.reduce.reducer import Reducer
    from bluestem.reduce.spec import ReductionSpec

    reducer = Reducer(ReductionSpec.from_dict(spec), tuple(scan_shape))
    with open_reader(path, dataset, verify) as reader:
        for offset in range(0, count, READ_FRAMES):
            n = min(READ_FRAMES, count - offset)
            frames, received = read_received(reader, first + offset, n)
            add_received(reducer, frames, received, position + offset)
    return reducer.to_part()


class DaskExecutor(ReductionExecutor):
    """Reduce blocks on a Dask cluster, over chunk-aligned frame ranges.

    It neither follows files nor shows partial images (the parts are on the workers until
    :meth:`result`): those capabilities keep their defaults. Every task reads the file
    once the run is complete (offline only), so there are no late frames either.

    Parameters
    ----------
    client : distributed.Client
    spec : bluestem.reduce.ReductionSpec
    scan_shape : (ny, nx)
    task_frames : int
        Frames per task (rounded to whole chunks of the file by the caller's blocks).
    verify : bool
        Verify chunk checksums on the workers.
    """

    def __init__(self, client, spec, scan_shape, *, task_frames: int = 4096, verify=True):
        self.client = client
        self.spec = spec
        self.scan_shape = tuple(scan_shape)
        self.task_frames = int(task_frames)
        self.verify = verify
        self._futures: list = []

    def reduce(self, block: Block) -> None:
        """Submit one task per ``task_frames`` frames of ``block``."""
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

    def result(self):
        """Gather the partial results and combine them into one reducer."""
        from bluestem.reduce.reducer import Reducer

        parts = self.client.gather(self._futures)
        return Reducer.combine(parts)

    def close(self) -> None:
        """Forget the submitted tasks."""
        self._futures.clear()
