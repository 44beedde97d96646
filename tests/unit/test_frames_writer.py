"""FrameWriter: round trips, any index order, dropped frames, SWMR, errors."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import bluestem
from bluestem.frames import FRAMES_PATH, RECEIVED_PATH, FrameWriter, verify_file

SCAN = (5, 9)
FRAME = (16, 12)
COMPRESSIONS = [None, "bitshuffle-lz4"]


def stack(scan=SCAN, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(18, size=(*scan, *FRAME)).astype(np.uint16)


def writer(path, **kw):
    kw = {"scan_shape": SCAN, "frame_shape": FRAME, "dtype": np.uint16, "chunk_frames": 4} | kw
    return FrameWriter(path, **kw)


def read(path, name=FRAMES_PATH):
    with h5py.File(path, "r") as f:
        return f[name][...]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_in_order_scan_round_trips_and_closes_read_only(tmp_path, compression):
    data = stack()
    path = tmp_path / "scan.h5"
    with writer(path, compression=compression) as w:
        for y in range(SCAN[0]):
            w.submit(y * SCAN[1], data[y])
    np.testing.assert_array_equal(read(path), data)
    assert read(path, RECEIVED_PATH).all()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert w.num_written == data.shape[0] * data.shape[1]
    assert verify_file(path).ok


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_any_order_and_late_frames_for_chunks_on_disk(tmp_path, compression):
    data = stack().reshape(-1, *FRAME)
    path = tmp_path / "late.h5"
    w = writer(path, compression=compression)
    w.open()
    w.submit(30, data[30:])  # rows 3 and 4 first
    w.submit(1, data[1:3])  # chunk (0, 0) incomplete: frames 0 and 3 missing
    w.submit(4, data[4:30])
    # Row 0's incomplete chunk fell two rows behind the newest frame, so it is on disk
    # with a gap; the late frames are merged into it by a read-modify-write.
    while w.num_written < data.shape[0] - 2:
        time.sleep(0.01)
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        assert list(f[RECEIVED_PATH][0, :4]) == [0, 1, 1, 0]
    w.submit(3, data[3:4])
    w.submit(0, data[0:1])
    w.submit(7, data[7:8])  # a repeated frame changes nothing
    summary = w.close()
    np.testing.assert_array_equal(read(path).reshape(-1, *FRAME), data)
    assert summary.frames_written == summary.frames_expected == data.shape[0]
    assert summary.dropped == 0
    assert verify_file(path).ok


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_dropped_frames_stay_zero_and_are_never_shifted(tmp_path, compression):
    data = stack().reshape(-1, *FRAME)
    dropped = [0, 6, 17, 44]
    path = tmp_path / "drop.h5"
    w = writer(path, compression=compression)
    w.open()
    for i in range(data.shape[0]):
        if i not in dropped:
            w.submit(i, data[i : i + 1])
    summary = w.close()
    got = read(path).reshape(-1, *FRAME)
    expected = data.copy()
    expected[dropped] = 0
    np.testing.assert_array_equal(got, expected)
    received = read(path, RECEIVED_PATH).ravel()
    assert list(np.flatnonzero(received == 0)) == dropped
    assert summary.dropped == len(dropped)
    report = verify_file(path)
    assert report.ok
    assert report.dropped_indices == dropped


def test_series_is_a_3d_dataset(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.integers(0, 255, size=(11, *FRAME), dtype=np.uint8)
    path = tmp_path / "series.h5"
    with FrameWriter(
        path, scan_shape=(11,), frame_shape=FRAME, dtype=np.uint8, chunk_frames=3
    ) as w:
        w.submit(6, data[6:])
        w.submit(0, data[:6])
    np.testing.assert_array_equal(read(path), data)
    with h5py.File(path, "r") as f:
        assert f[FRAMES_PATH].chunks == (3, *FRAME)
        assert f[RECEIVED_PATH].shape == (11,)


def test_swmr_reader_sees_completed_rows_while_the_scan_runs(tmp_path):
    data = stack()
    path = tmp_path / "swmr.h5"
    w = writer(path, flush_interval=60.0)  # only row completion flushes
    w.open()
    try:
        w.submit(0, data[0])
        w.submit(SCAN[1], data[1])
        w.submit(2 * SCAN[1], data[2, :3])  # row 2 incomplete
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            frames, received = f[FRAMES_PATH], f[RECEIVED_PATH]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                received.refresh()
                if received[:2].all():
                    break
                time.sleep(0.02)
            frames.refresh()
            np.testing.assert_array_equal(frames[:2], data[:2])
            assert received[:2].all()
            assert not received[3:].any()
    finally:
        w.close()
    assert read(path, RECEIVED_PATH).sum() == 2 * SCAN[1] + 3


def test_never_overwrites(tmp_path):
    path = tmp_path / "exists.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="exists"):
        writer(path).open()
    assert path.read_bytes() == b"precious"


def test_missing_directory_is_named(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        writer(missing / "f.h5").open()


def test_unwritable_directory_is_named(tmp_path):
    if os.geteuid() == 0:
        # Root passes every permission bit; /proc refuses new files even to root.
        with pytest.raises(PermissionError, match="directory /proc is not writable"):
            writer(Path("/proc") / "f.h5").open()
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=str(locked)):
            writer(locked / "f.h5").open()
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"scan_shape": (0, 4)}, "scan_shape"),
        ({"scan_shape": (-1,)}, "scan_shape"),
        ({"scan_shape": (2, 2, 2)}, "scan_shape"),
        ({"frame_shape": (16,)}, "frame_shape"),
        ({"compression": "zip"}, "bitshuffle-lz4"),
        ({"dtype": "U4"}, "dtype"),
        ({"queue_depth": 0}, "queue_depth"),
        ({"chunk_frames": 0}, "chunk_frames"),
    ],
)
def test_bad_construction_names_the_value(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        writer(tmp_path / "f.h5", **kw)
    assert not (tmp_path / "f.h5").exists()


def test_refused_submissions_leave_earlier_frames_intact(tmp_path):
    data = stack().reshape(-1, *FRAME)
    path = tmp_path / "refused.h5"
    w = writer(path)
    w.open()
    w.submit(0, data[:9])
    with pytest.raises(ValueError, match=r"\(n, 16, 12\)"):
        w.submit(9, np.zeros((2, 12, 16), np.uint16))
    with pytest.raises(TypeError, match="uint16"):
        w.submit(9, data[9:11].astype(np.float32))
    with pytest.raises(ValueError, match=r"allowed 0\.\.44"):
        w.submit(44, data[:2])
    with pytest.raises(ValueError, match="out of range"):
        w.submit(-1, data[:1])
    with pytest.raises(TypeError, match="numpy array"):
        w.submit(0, [[1]])
    summary = w.close()
    np.testing.assert_array_equal(read(path).reshape(-1, *FRAME)[:9], data[:9])
    assert summary.frames_written == 9
    assert verify_file(path).ok


def test_writer_thread_error_is_raised_on_submit_and_close(tmp_path):
    data = stack().reshape(-1, *FRAME)
    path = tmp_path / "broken.h5"
    w = writer(path, queue_depth=1)
    w.open()

    def fail(key):
        raise OSError("disk on fire")

    w._write_chunk = fail  # the next completed chunk fails in the writer thread
    w.submit(0, data[:4])
    with pytest.raises(OSError, match="disk on fire"):
        for _ in range(1000):  # submit never blocks forever on a dead writer
            w.submit(4, data[4:5])
    with pytest.raises(OSError, match="disk on fire"):
        w.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444


def test_abort_keeps_what_was_written(tmp_path):
    data = stack().reshape(-1, *FRAME)
    path = tmp_path / "abort.h5"
    with pytest.raises(KeyboardInterrupt), writer(path) as w:
        w.submit(0, data[:9])
        while w.num_written < 9:
            time.sleep(0.01)
        raise KeyboardInterrupt
    got = read(path).reshape(-1, *FRAME)
    np.testing.assert_array_equal(got[:9], data[:9])
    assert not got[9:].any()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(9, data[9:10])


def test_attributes_metadata_and_dims(tmp_path):
    path = tmp_path / "meta.h5"
    metadata = {
        "scan": {"shape": SCAN, "step": (2e-10, 3e-10), "rotation": 0.1, "dwell": None},
        "detector": {"name": "twin", "counter_depth": 12, "labels": ["a", "b"]},
        "microscope": {"optics": {"high_tension": 200e3}, "mixed": [1, "x", None]},
        "operator": "jd",
    }
    calibration = {"scan_step": (2e-10, 3e-10), "angle_per_pixel": 0.5e-3}
    with writer(path, metadata=metadata, calibration=calibration) as w:
        w.submit(0, stack()[0])
    with h5py.File(path, "r") as f:
        assert f.attrs["bluestem_version"] == bluestem.__version__
        assert f.attrs["created"].startswith("20")
        assert list(f.attrs["scan_shape"]) == list(SCAN)
        assert list(f.attrs["chunk_shape"]) == [1, 4, *FRAME]
        assert f.attrs["compression"] == "none"
        assert f["metadata/scan"].attrs["rotation"] == 0.1
        assert f["metadata/scan"].attrs["dwell"] == "null"
        assert list(f["metadata/detector"].attrs["labels"]) == ["a", "b"]
        assert f["metadata/microscope/optics"].attrs["high_tension"] == 200e3
        assert f["metadata/microscope"].attrs["mixed"] == '[1, "x", null]'
        assert f["metadata"].attrs["operator"] == "jd"
        assert f["writer"].attrs["write_path"] == "direct_chunk"
        array = f["bluestem/frames"]
        dims = [
            (array[f"dim{i}"].attrs["name"], array[f"dim{i}"].attrs["units"], array[f"dim{i}"][1])
            for i in range(4)
        ]
        assert dims == [
            ("y", "m", 2e-10),
            ("x", "m", 3e-10),
            ("ky", "mrad", 0.5),
            ("kx", "mrad", 0.5),
        ]


def test_a_reserved_text_is_filled_during_the_acquisition_and_read_by_a_swmr_reader(tmp_path):
    from bluestem.frames.layout import ReservedText, reserved_text

    path = tmp_path / "reserved.h5"
    header = "HDR,\tCounter Depth (number):\t12\nEnd\t"
    data = stack()
    w = writer(path, metadata={"merlin": {"host": "det1", "acquisition_header":
                                          ReservedText(64)}})  # fmt: skip
    with w:
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            assert reserved_text(f["metadata/merlin/acquisition_header"]) == ""  # unfilled
        w.submit(0, data[0])
        w.fill_text("/metadata/merlin/acquisition_header", header)
        for y in range(1, SCAN[0]):
            w.submit(y * SCAN[1], data[y])
    with h5py.File(path, "r") as f:
        assert reserved_text(f["metadata/merlin/acquisition_header"]) == header
        assert f["metadata/merlin"].attrs["host"] == "det1"
    np.testing.assert_array_equal(read(path), data)
    assert verify_file(path).ok


def test_a_text_longer_than_its_reservation_is_cut_and_says_so(tmp_path):
    from bluestem.frames.layout import ReservedText, reserved_text

    path = tmp_path / "cut.h5"
    with writer(path, metadata={"m": {"t": ReservedText(16)}}) as w:
        w.fill_text("/metadata/m/t", "x" * 40)
    with h5py.File(path, "r") as f:
        assert reserved_text(f["metadata/m/t"]) == "x" * 11 + "[cut]"


def test_sync_interval_zero_fsyncs_frames_before_the_map_at_every_row(tmp_path, monkeypatch):
    import bluestem.frames.writer as writer_module

    data = stack()
    order = []  # at each fsync: frames the in-memory map holds vs the map on the dataset

    real_fsync = os.fsync

    def spy(fd):
        if w._file.id.valid:  # not the final sync of the closed file
            order.append((int(w._received.sum()), int(w._received_ds[...].sum())))
        real_fsync(fd)

    monkeypatch.setattr(writer_module.os, "fsync", spy)
    w = writer(tmp_path / "synced.h5", sync_interval=0)
    w.open()
    for y in range(SCAN[0]):
        w.submit(y * SCAN[1], data[y])
    w.close()
    assert w.syncs >= SCAN[0]  # every row (its flush), and the close
    # At each sync the dataset's map still lags: it is written only after the sync.
    assert all(on_disk <= held for held, on_disk in order)
    assert any(on_disk < held for held, on_disk in order)
    assert verify_file(tmp_path / "synced.h5").ok
    np.testing.assert_array_equal(read(tmp_path / "synced.h5"), data)


def test_sync_interval_none_never_fsyncs(tmp_path):
    data = stack()
    w = writer(tmp_path / "unsynced.h5", sync_interval=None)
    w.open()
    for y in range(SCAN[0]):
        w.submit(y * SCAN[1], data[y])
    w.close()
    assert w.syncs == 0
    assert verify_file(tmp_path / "unsynced.h5").ok


@pytest.mark.parametrize("bad", [-1, 1e9, float("nan")])
def test_a_bad_sync_interval_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match=r"sync_interval=.* s: allowed None \(never\) or 0..3600"):
        writer(tmp_path / "x.h5", sync_interval=bad)
