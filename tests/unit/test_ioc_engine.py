"""The acquisition engine with in-memory doubles (no CA, no twin, no HDF5)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bluestem.ioc.acquisition import AcquisitionEngine, FrameSchedule


def render(first: int, count: int) -> np.ndarray:
    """Frame i is filled with i + 1 (so a missing or shifted frame is visible)."""
    values = np.arange(first + 1, first + count + 1, dtype=np.uint16)
    return np.broadcast_to(values[:, None, None], (count, 4, 4)).copy()


class MemorySink:
    """A writer double: records submissions; can block to exercise backpressure."""

    def __init__(self, n: int, gate: threading.Event | None = None):
        self.entered = threading.Event()
        self.frames = np.zeros((n, 4, 4), np.uint16)
        self.received = np.zeros(n, bool)
        self.order: list[int] = []
        self.gate = gate
        self.closed = self.aborted = False
        self.num_written = 0

    def submit(self, first, frames):
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        n = len(frames)
        assert not self.received[first : first + n].any(), "frame submitted twice"
        self.frames[first : first + n] = frames
        self.received[first : first + n] = True
        self.order.extend(range(first, first + n))
        self.num_written += n

    def close(self):
        self.closed = True
        return "closed"

    def abort(self):
        self.aborted = True
        return "aborted"


def run(engine: AcquisitionEngine):
    engine.start()
    assert engine.join(30)
    return engine.snapshot()


def test_all_frames_in_place():
    sink = MemorySink(100)
    schedule = FrameSchedule(n_frames=100, row_length=10, frame_bytes=32)
    snap = run(AcquisitionEngine(render, sink, schedule))
    assert snap.state == "done" and snap.finished and snap.error is None
    assert snap.produced == snap.submitted == snap.written == 100 and snap.dropped == 0
    assert snap.summary == "closed" and sink.closed
    assert sink.received.all()
    np.testing.assert_array_equal(sink.frames[:, 0, 0], np.arange(1, 101))
    assert snap.progress == 100.0


def test_dropped_frames_are_never_submitted_and_counted():
    sink = MemorySink(50)
    schedule = FrameSchedule(n_frames=50, row_length=10, frame_bytes=32)
    snap = run(AcquisitionEngine(render, sink, schedule, dropped={3, 4, 17, 49, 99}))
    assert snap.dropped == 4  # 99 is outside the acquisition
    assert np.flatnonzero(~sink.received).tolist() == [3, 4, 17, 49]
    kept = sink.received
    np.testing.assert_array_equal(sink.frames[kept, 0, 0], np.flatnonzero(kept) + 1)


def test_late_frames_arrive_out_of_order_in_their_place():
    sink = MemorySink(40)
    schedule = FrameSchedule(n_frames=40, row_length=8, frame_bytes=32)
    snap = run(AcquisitionEngine(render, sink, schedule, late={5: 0.05, 30: 0.01}))
    assert snap.submitted == 40 and snap.dropped == 0 and snap.late_pending == 0
    assert sink.received.all()
    np.testing.assert_array_equal(sink.frames[:, 0, 0], np.arange(1, 41))
    assert sink.order.index(5) > sink.order.index(6)  # delivered after its successors


def test_paced_at_the_period_plus_flyback():
    schedule = FrameSchedule(n_frames=20, row_length=5, period=1e-3, flyback=2e-3)
    assert schedule.elapsed(20) == pytest.approx(20e-3 + 4 * 2e-3)
    assert schedule.elapsed(0) == 0
    assert FrameSchedule(n_frames=20, row_length=5).elapsed(20) == 0  # max rate


def test_block_size_whole_rows_and_bounded():
    assert FrameSchedule(n_frames=65536, row_length=256, frame_bytes=32768).block_frames() == 256
    paced = FrameSchedule(n_frames=10**6, row_length=10, period=0.01, frame_bytes=2)
    assert paced.block_frames() == 10  # at most ~0.1 s of frames per block
    assert FrameSchedule(n_frames=3, row_length=100, frame_bytes=2).block_frames() == 3


def test_stop_keeps_what_was_written_and_closes():
    gate = threading.Event()
    sink = MemorySink(1000, gate)
    schedule = FrameSchedule(n_frames=1000, row_length=10, frame_bytes=8 * 1024**2 // 10)
    engine = AcquisitionEngine(render, sink, schedule)
    engine.start()
    assert sink.entered.wait(10)  # the first block is being submitted (blocked: backpressure)
    engine.stop()
    gate.set()
    assert engine.join(30)
    snap = engine.snapshot()
    assert snap.state == "stopped" and sink.closed and not sink.aborted
    assert snap.submitted == schedule.block_frames() == 10
    assert sink.received[: snap.submitted].all() and not sink.received[snap.submitted :].any()


def test_abort_aborts_the_sink():
    sink = MemorySink(10_000)
    schedule = FrameSchedule(n_frames=10_000, row_length=100, period=1e-3)
    engine = AcquisitionEngine(render, sink, schedule)
    engine.start()
    engine.abort()
    assert engine.join(30)
    snap = engine.snapshot()
    assert snap.state == "aborted" and sink.aborted and snap.submitted < 10_000


def test_frames_scanned_blanked_are_withheld():
    sink = MemorySink(20)
    engine = AcquisitionEngine(render, sink, FrameSchedule(n_frames=20, row_length=5))
    engine.blank(True)
    snap = run(engine)
    assert not sink.received.any()  # a frame without dose is not a measurement
    assert snap.produced == 20 and snap.submitted == 0 and snap.withheld == 20
    # a series with the beam blanked is a dark reference: recorded without dose
    sink = MemorySink(20)
    engine = AcquisitionEngine(render, sink, FrameSchedule(n_frames=20, row_length=5),
                               withhold_blanked=False)  # fmt: skip
    engine.blank(True)
    run(engine)
    assert sink.received.all() and not sink.frames.any()


def test_a_scan_held_and_resumed_with_the_beam_back_takes_the_blanked_rows_again():
    n, row = 60, 6  # blocks of 5 frames (0.1 s at 20 ms), cut at each row's end
    sink = MemorySink(n)
    engine = AcquisitionEngine(render, sink, FrameSchedule(n_frames=n, row_length=row,
                                                           period=0.02))  # fmt: skip
    engine.start()
    deadline = time.monotonic() + 10
    while engine.snapshot().produced < 15:  # blanked in the middle of row 2
        assert time.monotonic() < deadline
        time.sleep(0.001)
    engine.blank(True)
    engine.pause()
    while engine.snapshot().state != "paused":
        assert time.monotonic() < deadline
        time.sleep(0.001)
    blanked = engine.snapshot()
    assert blanked.withheld > 0 and blanked.produced % row == 0
    engine.blank(False)
    engine.resume()
    assert engine.join(10)
    snap = engine.snapshot()
    # every frame once, in its place, equal to an uninterrupted scan's
    assert sink.received.all()
    np.testing.assert_array_equal(sink.frames, render(0, n))
    assert snap.submitted == n and snap.withheld == 0 and snap.rescans == 1


def test_render_error_is_a_fault_and_the_sink_keeps_what_came_before():
    def broken(first, count):
        raise RuntimeError("twin exploded")

    sink = MemorySink(10)
    snap = run(AcquisitionEngine(broken, sink, FrameSchedule(n_frames=10, row_length=5)))
    assert snap.state == "fault" and "twin exploded" in str(snap.error)
    assert sink.closed and not sink.aborted


def test_scan_without_detector_only_moves_the_beam():
    snap = run(AcquisitionEngine(None, None, FrameSchedule(n_frames=30, row_length=5)))
    assert snap.state == "done" and snap.produced == 30 and snap.submitted == 0


def test_parallel_render_gives_the_same_frames():
    sink = MemorySink(1000)
    schedule = FrameSchedule(n_frames=1000, row_length=100, frame_bytes=32)
    snap = run(AcquisitionEngine(render, sink, schedule, render_threads=3, dropped={7}))
    assert snap.submitted == 999 and snap.dropped == 1
    expected = np.arange(1, 1001)
    expected[7] = 0
    np.testing.assert_array_equal(sink.frames[:, 0, 0], expected)


class ListStream:
    """A FrameStream double: yields the given (first, count) blocks of render()'s
    frames; ``stop`` ends it after the block in hand; ``fail_after`` raises after that
    many blocks."""

    def __init__(self, blocks, *, gate: threading.Event | None = None, fail_after=None):
        self.spans, self.gate, self.fail_after = list(blocks), gate, fail_after
        self.stopped = threading.Event()

    def blocks(self):
        from bluestem.ioc.source import FrameBlock

        for i, (first, count) in enumerate(self.spans):
            if self.fail_after is not None and i == self.fail_after:
                raise ConnectionError("detector went away after block 2")
            if self.stopped.is_set():
                return
            yield FrameBlock(first, render(first, count))
            if self.gate is not None:
                self.gate.wait(10)

    def stop(self):
        self.stopped.set()


def test_a_stream_is_submitted_as_it_comes_and_a_skipped_frame_is_dropped_not_shifted():
    sink = MemorySink(20)
    # frames 7 and 8 never arrive (the detector's numbers jump from 7 to 10)
    stream = ListStream([(0, 5), (5, 2), (9, 11)])
    snap = run(AcquisitionEngine(None, sink, FrameSchedule(n_frames=20, row_length=5),
                                 prepare=lambda: stream))  # fmt: skip
    assert snap.state == "done" and sink.closed
    assert (snap.produced, snap.submitted, snap.dropped) == (20, 18, 2)
    assert np.flatnonzero(~sink.received).tolist() == [7, 8]
    kept = np.flatnonzero(sink.received)
    # every frame sits at its own index: frame i holds i + 1
    assert np.array_equal(sink.frames[kept, 0, 0], kept + 1)


def test_stopping_a_stream_ends_it_after_the_block_in_hand():
    gate = threading.Event()
    stream = ListStream([(0, 4), (4, 4), (8, 4)], gate=gate)
    sink = MemorySink(12)
    engine = AcquisitionEngine(None, sink, FrameSchedule(n_frames=12, row_length=4),
                               prepare=lambda: stream)  # fmt: skip
    engine.start()
    assert sink.entered.wait(10)
    engine.stop()
    assert stream.stopped.is_set()  # the source was told at once
    gate.set()
    assert engine.join(10)
    snap = engine.snapshot()
    assert snap.state == "stopped" and sink.closed
    assert snap.submitted == 4 and sink.received[:4].all() and not sink.received[4:].any()


def test_a_stream_that_fails_keeps_what_came_before_and_reports_the_error():
    sink = MemorySink(12)
    stream = ListStream([(0, 4), (4, 4), (8, 4)], fail_after=2)
    snap = run(AcquisitionEngine(None, sink, FrameSchedule(n_frames=12, row_length=4),
                                 prepare=lambda: stream))  # fmt: skip
    assert snap.state == "fault" and sink.closed and not sink.aborted  # queued frames kept
    assert "detector went away" in str(snap.error)
    assert sink.received[:8].all() and not sink.received[8:].any()


def test_a_block_outside_the_acquisition_is_a_fault_naming_it():
    sink = MemorySink(10)
    stream = ListStream([(0, 5), (8, 4)])
    snap = run(AcquisitionEngine(None, sink, FrameSchedule(n_frames=10, row_length=5),
                                 prepare=lambda: stream))  # fmt: skip
    assert snap.state == "fault"
    assert "frames 8..11, outside the acquisition's 0..9" in str(snap.error)
    assert sink.received[:5].all()
