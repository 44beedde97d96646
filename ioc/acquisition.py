"""The acquisition engine: renders frames off the asyncio loop and feeds the writer.

One engine runs one acquisition.  Its thread renders a block of frames at a time (the twin
releases the GIL), paces them at the dwell / acquire period (unless ``period`` is 0: as fast
as the frame path allows), applies the fault schedule (dropped frames are never submitted and
are counted; late frames are submitted after their delay, out of order) and submits them to
the sink (a :class:`bluestem.frames.FrameWriter`; its bounded queue provides backpressure,
so no frame is ever lost silently).  The asyncio side only starts and stops the engine and
reads :meth:`AcquisitionEngine.snapshot`, which is safe from any thread.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from .blanking import Withheld, runs_of
from .schedule import FrameSchedule
from .threads import lower_thread_priority

__all__ = [
    "AcquisitionEngine",
    "EngineSnapshot",
    "EngineState",
    "FrameSchedule",
    "FrameSink",
]


class FrameSink(Protocol):
    """What the engine needs from a writer (``bluestem.frames.FrameWriter`` fits)."""

    num_written: int

    def submit(self, first: int, frames: np.ndarray) -> None: ...
    def close(self) -> Any: ...
    def abort(self) -> Any: ...


class EngineState(StrEnum):
    """Where an engine is: the first three while it runs, the last four once finished."""

    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    STOPPED = "stopped"
    ABORTED = "aborted"
    FAULT = "fault"


FINISHED = frozenset({EngineState.DONE, EngineState.STOPPED, EngineState.ABORTED,
                      EngineState.FAULT})  # fmt: skip


@dataclass(frozen=True)
class EngineSnapshot:
    """A consistent copy of the engine's counters (see :meth:`AcquisitionEngine.snapshot`)."""

    state: EngineState
    produced: int  # beam positions visited (frames rendered or dropped)
    submitted: int  # frames handed to the sink
    written: int  # frames the sink has written
    dropped: int  # frames the fault schedule dropped
    late_pending: int
    n_frames: int
    error: BaseException | None = None
    summary: Any = None
    withheld: int = 0  # frames scanned while blanked, not delivered (ioc/blanking.py)
    rescans: int = 0  # times a resumed scan went back to rows scanned while blanked

    @property
    def finished(self) -> bool:
        """True once the engine has ended (its sink closed or aborted)."""
        return self.state in FINISHED

    @property
    def progress(self) -> float:
        """Percent of the positions visited."""
        return 100.0 * self.produced / self.n_frames if self.n_frames else 100.0


@dataclass
class _Counters:
    state: EngineState = EngineState.IDLE
    produced: int = 0
    submitted: int = 0
    dropped: int = 0
    late_pending: int = 0
    error: BaseException | None = None
    summary: Any = None
    late: list = field(default_factory=list)
    rescans: int = 0


class AcquisitionEngine:
    """Run one acquisition in its own thread.

    Parameters
    ----------
    render : callable or None
        ``render(first, count) -> (count, ky, kx)`` array; None for a scan without an
        armed detector (the beam moves, nothing is recorded).
    prepare : callable, optional
        Called first in the engine thread; returns ``render`` (building a twin takes
        seconds, which must not be spent on the asyncio loop or inside a put).
    render_threads : int
        Threads rendering parts of each block at once (``render`` must be thread-safe
        for different ranges and release the GIL, as the twin's does).
    sink : FrameSink or None
        Where frames go; None to discard them (detector acquiring without capture).
    schedule : FrameSchedule
    dropped : set of int
        Flat indices never delivered.
    late : mapping int -> float
        Flat index -> extra delay in seconds.
    withhold_blanked : bool
        Withhold frames scanned while blanked (a scan, :mod:`bluestem.ioc.blanking`);
        False records them without dose (a series: a dark reference).
    """

    def __init__(
        self,
        render: Callable[[int, int], np.ndarray] | None,
        sink: FrameSink | None,
        schedule: FrameSchedule,
        *,
        prepare: Callable[[], Callable[[int, int], np.ndarray]] | None = None,
        render_threads: int = 1,
        dropped: frozenset[int] | set[int] = frozenset(),
        late: dict[int, float] | None = None,
        withhold_blanked: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.render = render
        self.prepare = prepare
        self.render_threads = max(1, int(render_threads))
        self.sink = sink
        self.schedule = schedule
        self.dropped = frozenset(i for i in dropped if 0 <= i < schedule.n_frames)
        self.late = {i: float(d) for i, d in (late or {}).items() if 0 <= i < schedule.n_frames}
        self._clock = clock
        self._lock = threading.Lock()
        self._c = _Counters()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._blank = threading.Event()
        self._blanked = threading.Event()
        self._hold = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: Any = None  # a FrameStream that ``prepare`` returned
        self._withheld = Withheld(schedule.n_frames)
        self.withhold_blanked = withhold_blanked

    # -- control (any thread) -------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread."""
        with self._lock:
            self._c.state = EngineState.RUNNING
        self._thread = threading.Thread(target=self._run, name="bluestem-acquire", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End early: pending late frames are delivered, the sink is closed normally."""
        self._stop.set()
        if self._stream is not None:
            self._stream.stop()

    def abort(self) -> None:
        """End early: pending frames are discarded, the sink is aborted."""
        self._abort.set()
        self.stop()

    def pause(self) -> None:
        """Hold at the next row boundary (the frames of finished rows are all delivered);
        :meth:`resume` goes on with the next row, :meth:`stop` ends there."""
        self._hold.set()

    def resume(self) -> None:
        """Go on after :meth:`pause` (a no-op when not held)."""
        self._hold.clear()

    def blank(self, on: bool) -> None:
        """Blank the beam: frames from now on carry no dose and are withheld until a
        resumed scan takes them again (:mod:`bluestem.ioc.blanking`)."""
        if on:
            self._blanked.set()  # latched: the block being scanned had no dose
        (self._blank.set if on else self._blank.clear)()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def snapshot(self) -> EngineSnapshot:
        """Counters as of now (thread-safe)."""
        sink = self.sink
        written = int(getattr(sink, "num_written", 0)) if sink is not None else 0
        with self._lock:
            c = self._c
            return EngineSnapshot(
                state=c.state,
                produced=c.produced,
                submitted=c.submitted,
                written=written if sink is not None else c.submitted,
                dropped=c.dropped,
                late_pending=c.late_pending,
                n_frames=self.schedule.n_frames,
                error=c.error,
                summary=c.summary,
                withheld=self._withheld.count,
                rescans=c.rescans,
            )

    # -- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        lower_thread_priority()
        final = EngineState.DONE
        try:
            prepared = self.prepare() if self.prepare is not None else self.render
            if hasattr(prepared, "blocks"):  # a FrameStream: it paces itself
                self._stream = prepared
                if self._stop.is_set():  # stopped while it was being prepared
                    prepared.stop()
                self._consume(prepared)
            else:
                self.render = prepared
                with ThreadPoolExecutor(self.render_threads, "bluestem-render") as pool:
                    self._produce(pool)
            if self._abort.is_set():
                final = EngineState.ABORTED
            else:
                self._flush_late(wait=not self._stop.is_set())
                final = EngineState.STOPPED if self._stop.is_set() else EngineState.DONE
        except BaseException as exc:  # the error is reported through the snapshot
            final = EngineState.FAULT
            with self._lock:
                self._c.error = exc
        summary = None
        try:
            if self.sink is not None:
                # A fault keeps every frame submitted before it (a detector lost after
                # frame 19 leaves frames 1..19 in the file); only an abort discards the
                # frames still queued.
                aborted = final == EngineState.ABORTED
                summary = self.sink.abort() if aborted else self.sink.close()
        except BaseException as exc:
            final = EngineState.FAULT
            with self._lock:
                self._c.error = self._c.error or exc
        with self._lock:
            self._c.summary = summary
            self._c.state = final

    def _render(self, pool: ThreadPoolExecutor, first: int, count: int) -> np.ndarray | None:
        if self.render is None:
            return None
        parts = self.render_threads
        if parts == 1 or count < 2 * parts:
            return self.render(first, count)
        edges = np.linspace(first, first + count, parts + 1).astype(int)
        blocks = list(pool.map(lambda a, b: self.render(a, b - a), edges[:-1], edges[1:]))
        return np.concatenate(blocks)

    def _produce(self, pool: ThreadPoolExecutor) -> None:
        schedule = self.schedule
        block = schedule.block_frames()
        row = schedule.row_length if block < schedule.row_length else schedule.n_frames
        skip = np.zeros(schedule.n_frames, dtype=bool) if (self.dropped or self.late) else None
        if skip is not None:
            skip[list(self.dropped | set(self.late))] = True
        t0 = self._clock()
        first = 0
        while first < schedule.n_frames and not self._stop.is_set():
            if self._hold.is_set() and first % schedule.row_length == 0:
                t0 += self._held()  # pacing resumes where it stopped, not in a rush
                back = self._rescan_from(first)
                t0 += schedule.elapsed(first) - schedule.elapsed(back)  # paced from now
                first = back
                continue
            # blocks never straddle a row boundary: a hold takes effect at the next row
            count = min(block, schedule.n_frames - first, row - first % row)
            if not self._blank.is_set():
                self._blanked.clear()
            frames = self._render(pool, first, count)
            due = t0 + schedule.elapsed(first + count)
            stopped = schedule.period > 0 and self._stop.wait(max(0.0, due - self._clock()))
            if stopped and self._abort.is_set():
                return
            if frames is not None and self._blanked.is_set():  # blanked while scanned
                if self.withhold_blanked:
                    self._withheld.mark(first, count, skip)
                    frames = None
                else:  # a dark frame on purpose (a series): recorded, without dose
                    frames = np.zeros_like(frames)
            # At max rate a frame is "late" relative to when it was really delivered.
            if schedule.period <= 0:
                due = self._clock()
            if first < self._c.produced:  # a row scanned again: its withheld frames only
                self._redeliver(first, count, frames)
            else:
                self._deliver(first, count, frames, skip, due)
            self._flush_late(wait=False)
            first += count

    def _consume(self, stream) -> None:
        """Submit a stream's blocks as they come; an index it skipped counts as dropped."""
        n = self.schedule.n_frames
        for block in stream.blocks():
            if self._abort.is_set():
                return
            first, count = int(block.first), len(block.frames)
            if first < 0 or first + count > n:
                raise ValueError(f"the source delivered frames {first}..{first + count - 1}, "
                                 f"outside the acquisition's 0..{n - 1}")  # fmt: skip
            if self.sink is not None and count:
                self.sink.submit(first, block.frames)
            with self._lock:
                c = self._c
                c.produced = max(c.produced, first + count)
                c.submitted += count
                c.dropped = c.produced - c.submitted

    def _rescan_from(self, first: int) -> int:
        """Where a resumed scan goes on: once the beam is back, the first row holding a
        withheld frame; else ``first``."""
        if self._blank.is_set() or self._stop.is_set():
            return first
        back = self._withheld.first_row_before(first, self.schedule.row_length)
        if back is None:
            return first
        with self._lock:
            self._c.rescans += 1
        return back

    def _redeliver(self, first: int, count: int, frames: np.ndarray | None) -> None:
        if frames is None:  # blanked again while rescanning: still withheld
            return
        sent = 0
        for start, stop in self._withheld.take(first, count):
            if self.sink is not None:
                self.sink.submit(first + start, frames[start:stop])
            sent += stop - start
        with self._lock:
            self._c.submitted += sent

    def _held(self) -> float:
        """Wait while held (or until stopped); the seconds spent waiting."""
        start = self._clock()
        with self._lock:
            self._c.state = EngineState.PAUSED
        while self._hold.is_set() and not self._stop.is_set():
            self._flush_late(wait=False)  # a late frame of a finished row still lands
            self._stop.wait(0.01)
        with self._lock:
            self._c.state = EngineState.RUNNING
        return self._clock() - start

    def _deliver(self, first, count, frames, skip, due) -> None:
        n_dropped = 0
        submitted = 0
        if skip is None or not skip[first : first + count].any():
            if frames is not None and self.sink is not None:
                self.sink.submit(first, frames)
            submitted = count if frames is not None else 0
        else:
            keep = ~skip[first : first + count]
            # Contiguous runs of kept frames, submitted as slices (no copy per frame).
            for start, stop in runs_of(keep):
                if frames is not None and self.sink is not None:
                    self.sink.submit(first + start, frames[start:stop])
                submitted += stop - start if frames is not None else 0
            for offset in np.flatnonzero(~keep):
                index = first + int(offset)
                if index in self.dropped:
                    n_dropped += 1
                elif frames is not None:
                    frame = frames[offset : offset + 1].copy()
                    heapq.heappush(self._c.late, (due + self.late[index], index, frame))
        with self._lock:
            self._c.produced = first + count
            self._c.submitted += submitted
            self._c.dropped += n_dropped
            self._c.late_pending = len(self._c.late)

    def _flush_late(self, *, wait: bool) -> None:
        heap = self._c.late
        while heap:
            due, index, frame = heap[0]
            delay = due - self._clock()
            if delay > 0 and not wait:
                return
            if delay > 0 and self._abort.wait(delay):
                return
            heapq.heappop(heap)
            if self.sink is not None:
                self.sink.submit(index, frame)
            with self._lock:
                self._c.submitted += 1
                self._c.late_pending = len(heap)
