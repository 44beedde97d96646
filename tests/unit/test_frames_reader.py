"""FrameReader: bitwise equal to h5py's read, checksums, SWMR while writing, bad input."""

from __future__ import annotations

import time

import h5py
import hdf5plugin  # noqa: F401  (bitshuffle for h5py's own reads of compressed files)
import numpy as np
import pytest
from corrupt import flip_in_chunk

from bluestem.frames import FRAMES_PATH, FrameReader, FrameWriter
from bluestem.frames.reader import ChecksumError, FramesNotWritten

SCAN = (3, 7)  # 7 frames a row in chunks of 3: every row ends in a 1-frame edge chunk
FRAME = (6, 5)
COMPRESSIONS = [None, "bitshuffle-lz4"]


def frames(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    return rng.integers(0, top, size=(n, *FRAME), dtype=dtype, endpoint=True)


def write(path, *, scan=SCAN, dtype=np.uint16, compression=None, chunk_frames=3, skip=()):
    n = int(np.prod(scan))
    data = frames(n, dtype)
    with FrameWriter(
        path,
        scan_shape=scan,
        frame_shape=FRAME,
        dtype=dtype,
        compression=compression,
        chunk_frames=chunk_frames,
    ) as w:
        for i in range(n):
            if i not in skip:
                w.submit(i, data[i : i + 1])
    return data


def h5py_frames(path):
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        return f[FRAMES_PATH][...].reshape(-1, *FRAME)


SPANS = [(0, 21), (0, 1), (2, 1), (6, 1), (0, 7), (7, 7), (14, 7), (1, 5), (5, 3), (6, 9), (4, 17)]


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("scan", [SCAN, (21,)], ids=["rows", "series"])
def test_reads_equal_h5py_bitwise(tmp_path, compression, dtype, scan):
    path = tmp_path / "f.h5"
    data = write(path, scan=scan, dtype=dtype, compression=compression)
    expected = h5py_frames(path)
    np.testing.assert_array_equal(expected, data)  # the reference itself is right
    for threads in (1, 2):
        with FrameReader(path, threads=threads) as r:
            assert r.dtype == dtype and r.frame_shape == FRAME and r.scan_shape == scan
            assert r.compression == compression and r.total == 21
            assert r.chunk_shape == ((1, 3, *FRAME) if len(scan) == 2 else (3, *FRAME))
            for first, count in SPANS:
                got = r.read(first, count)
                assert got.shape == (count, *FRAME) and got.dtype == dtype
                assert got.tobytes() == expected[first : first + count].tobytes(), (first, count)
            rows = r.rows(0, r._grid.nrows)
            assert rows.tobytes() == expected.tobytes()
            assert r.received(0, 21).all()


def test_rows_have_the_scan_shape_and_results_are_writable(tmp_path):
    path = tmp_path / "f.h5"
    data = write(path).reshape(*SCAN, *FRAME)
    with FrameReader(path) as r:
        rows = r.rows(1, 3)
        assert rows.shape == (2, SCAN[1], *FRAME)
        np.testing.assert_array_equal(rows, data[1:3])
        rows[0, 0, 0, 0] += 1  # the caller owns the array
        one = r.read(4, 1)
        # A single frame is copied out rather than pinning the chunks' whole buffer.
        assert one.base is None or one.base.nbytes <= 2 * one.nbytes


def test_big_chunks_default_geometry_round_trip(tmp_path):
    # The writer's default chunking: 1 MiB = 8 frames of 256², a row of 11 ends in 3.
    path = tmp_path / "big.h5"
    data = np.random.default_rng(3).integers(0, 4096, (2, 11, 256, 256), dtype=np.uint16)
    with FrameWriter(path, scan_shape=(2, 11), frame_shape=(256, 256), dtype=np.uint16) as w:
        for y in range(2):
            w.submit(y * 11, data[y])
    flat = data.reshape(22, 256, 256)
    with FrameReader(path) as r:
        assert r.chunk_shape == (1, 8, 256, 256)
        np.testing.assert_array_equal(r.read(0, 22), flat)
        np.testing.assert_array_equal(r.read(5, 12), flat[5:17])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("offset", [(1, 3, 0, 0), (2, 6, 0, 0)], ids=["full", "edge"])
def test_a_flipped_data_byte_raises_naming_chunk_and_both_checksums(tmp_path, threads, offset):
    path = tmp_path / "flip.h5"
    write(path)
    with FrameReader(path) as r:
        clean = r.read(0, 21)
    flip_in_chunk(path, offset, 7)
    with FrameReader(path, threads=threads) as r:
        with pytest.raises(ChecksumError) as info:
            r.read(0, 21)
        err = info.value
        assert err.offset == offset
        first = offset[0] * 7 + offset[1]
        assert err.frames == list(range(first, first + (1 if offset[1] == 6 else 3)))
        assert err.stored != err.computed
        text = str(err)
        assert str(path) in text and str(offset) in text
        assert f"{err.stored:#010x}" in text and f"{err.computed:#010x}" in text
        # Chunks that are intact still read; the bad one is refused on every request.
        np.testing.assert_array_equal(r.read(0, 7), clean[:7])
        with pytest.raises(ChecksumError):
            r.read(first, 1)
    # Without verification the changed bytes come back: the check is what caught them.
    with FrameReader(path, verify=False) as r:
        assert r.read(0, 21).tobytes() != clean.tobytes()


def test_a_flipped_checksum_byte_is_caught(tmp_path):
    path = tmp_path / "flipsum.h5"
    write(path)
    flip_in_chunk(path, (0, 0, 0, 0), -2)  # inside the 4 stored checksum bytes
    with FrameReader(path) as r, pytest.raises(ChecksumError, match=r"\(0, 0, 0, 0\)"):
        r.read(0, 1)


def test_a_flipped_byte_in_a_compressed_chunk_is_named(tmp_path):
    path = tmp_path / "flipz.h5"
    write(path, compression="bitshuffle-lz4")
    with h5py.File(path, "r") as f:
        size = f[FRAMES_PATH].id.get_chunk_info_by_coord((2, 3, 0, 0)).size
    flip_in_chunk(path, (2, 3, 0, 0), size // 2)
    with FrameReader(path) as r:
        with pytest.raises(ChecksumError) as info:
            r.read(10, 11)
        assert info.value.offset == (2, 3, 0, 0) and info.value.frames == [17, 18, 19]
        assert info.value.stored != info.value.computed
        r.read(0, 14)  # rows 0 and 1 are intact


def test_dropped_frames_are_flagged_and_unwritten_chunks_refused(tmp_path):
    # Frame 1 dropped inside a written chunk; frames 7..9 (one whole chunk) never sent,
    # so that chunk is not in the file at all.
    path = tmp_path / "drop.h5"
    data = write(path, skip=(1, 7, 8, 9))
    with FrameReader(path) as r:
        assert r.received(0, 11).tolist() == [1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1]
        got = r.read(0, 3)
        np.testing.assert_array_equal(got[[0, 2]], data[[0, 2]])
        assert not got[1].any()  # zeros, flagged as not received
        with pytest.raises(FramesNotWritten) as info:
            r.read(5, 4)
        assert info.value.first_missing == 7 and info.value.available == 2
        assert "frame 7 is not written" in str(info.value)
        np.testing.assert_array_equal(r.read(10, 11), data[10:])
        # The writer closed the file: the unwritten chunk reads as zeros, flagged.
        assert r.writer_closed()
        got, written = r.read_written(5, 6)
        assert written.tolist() == [True, True, False, False, False, True]
        np.testing.assert_array_equal(got[[0, 1, 5]], data[[5, 6, 10]])
        assert not got[2:5].any()


def test_a_missing_chunk_of_a_closed_file_is_missing_not_late(tmp_path):
    """The live reduction's read: frames of a chunk a closed file will never hold come
    back at once as not received (a disk that filled), not after a 10 s timeout."""
    from bluestem.reduce.blocks import read_received

    path = tmp_path / "short.h5"
    data = write(path, skip=(7, 8, 9))
    with FrameReader(path) as r:
        t0 = time.monotonic()
        got, received = read_received(r, 0, 11)
        assert time.monotonic() - t0 < 1.0
    assert received.tolist() == [True] * 7 + [False] * 3 + [True]
    np.testing.assert_array_equal(got[received], data[:11][received])
    assert not got[~received].any()


def test_reads_a_file_while_the_writer_is_writing_it(tmp_path):
    path = tmp_path / "live.h5"
    scan = (6, 7)
    data = frames(42, np.uint16, seed=9)
    w = FrameWriter(path, scan_shape=scan, frame_shape=FRAME, dtype=np.uint16, chunk_frames=3)
    w.open()
    try:
        w.submit(0, data[:14])  # rows 0 and 1
        with FrameReader(path) as r:
            wait_for(lambda: r.received(0, 14).all(), r)
            np.testing.assert_array_equal(r.rows(0, 2).reshape(14, *FRAME), data[:14])
            with pytest.raises(FramesNotWritten) as info:
                r.read(7, 14)
            assert info.value.available == 7
            assert not r.received(14, 28).any()
            w.submit(14, data[14:35])  # rows 2 to 4
            wait_for(lambda: r.received(14, 21).all(), r)
            np.testing.assert_array_equal(r.read(7, 28), data[7:35])
            with pytest.raises(FramesNotWritten):
                r.rows(5, 6)
            assert not r.writer_closed()  # still writing: a missing chunk may yet come
            w.submit(35, data[35:])
            w.close()
            r.refresh()
            np.testing.assert_array_equal(r.read(0, 42), data)
    finally:
        if w._state == "open":
            w.abort()


def wait_for(condition, reader, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        reader.refresh()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError("the writer's rows never became visible")
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("first", "count", "message"),
    [
        (-1, 1, r"first=-1 out of range: allowed 0\.\.20"),
        (21, 1, r"first=21 out of range: allowed 0\.\.20"),
        (0, 0, r"count=0 must be >= 1"),
        (3, -2, r"count=-2 must be >= 1"),
        (15, 7, r"count=7 from first=15 runs past the 21 frames .*allowed 1\.\.6"),
    ],
)
def test_bad_ranges_raise_naming_the_value_and_range(tmp_path, first, count, message):
    path = tmp_path / "f.h5"
    write(path)
    with FrameReader(path) as r:
        with pytest.raises(ValueError, match=message):
            r.read(first, count)
        with pytest.raises(ValueError, match=message):
            r.received(first, count)


def test_other_bad_arguments(tmp_path):
    path = tmp_path / "f.h5"
    write(path)
    with FrameReader(path) as r:
        for start, stop in ((-1, 1), (2, 2), (0, 4)):
            with pytest.raises(ValueError, match=r"need 0 <= start < stop <= 3"):
                r.rows(start, stop)
        with pytest.raises(TypeError):
            r.read(1.5, 2)
    with pytest.raises(ValueError, match="threads=0 must be >= 1"):
        FrameReader(path, threads=0)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a raw-frame file"):
        FrameReader(foreign)
    with pytest.raises(FileNotFoundError):
        FrameReader(tmp_path / "missing.h5")


def test_a_file_without_checksums_needs_verify_false(tmp_path):
    path = tmp_path / "nosum.h5"
    data = frames(21, np.uint16)
    with h5py.File(path, "w") as f:
        f.create_dataset(FRAMES_PATH, data=data.reshape(*SCAN, *FRAME), chunks=(1, 3, *FRAME))
        f.create_dataset("received", data=np.ones(SCAN, np.uint8))
    with pytest.raises(ValueError, match="no fletcher32 filter: open with verify=False"):
        FrameReader(path)
    with FrameReader(path, verify=False) as r:
        np.testing.assert_array_equal(r.read(2, 12), data[2:14])


def test_close_is_idempotent_and_reported(tmp_path):
    path = tmp_path / "f.h5"
    write(path)
    r = FrameReader(path)
    assert not r.closed and "(3, 7)" in repr(r)
    r.close()
    r.close()
    assert r.closed and "closed" in repr(r)
