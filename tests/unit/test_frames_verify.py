"""verify_file catches a flipped byte in a chunk's data or in its checksum, and a frame the
received map claims whose chunk is not on disk; the writer flushes frames before the map."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from corrupt import chunk_location, flip

from bluestem.frames import FRAMES_PATH, FrameWriter, verify_file

SCAN = (4, 6)
FRAME = (8, 8)


def write(path, compression=None, skip=()):
    rng = np.random.default_rng(5)
    data = rng.poisson(18, size=(SCAN[0] * SCAN[1], *FRAME)).astype(np.uint16)
    with FrameWriter(
        path,
        scan_shape=SCAN,
        frame_shape=FRAME,
        dtype=np.uint16,
        compression=compression,
        chunk_frames=2,
    ) as w:
        for i in range(data.shape[0]):
            if i not in skip:
                w.submit(i, data[i : i + 1])
    return data


@pytest.mark.parametrize("compression", [None, "bitshuffle-lz4"])
def test_clean_file_passes(tmp_path, compression):
    path = tmp_path / "clean.h5"
    write(path, compression)
    report = verify_file(path)
    assert report.ok, report.summary()
    assert report.chunks_checked == SCAN[0] * SCAN[1] // 2
    assert report.frames_received == report.frames_expected == SCAN[0] * SCAN[1]
    assert report.corrupt_chunks == []
    assert "OK" in report.summary()


def test_one_flipped_data_byte_is_caught_and_named(tmp_path):
    path = tmp_path / "flip.h5"
    write(path)
    start, _ = chunk_location(path, (2, 2, 0, 0))  # frames 14 and 15
    flip(path, start + 100)
    report = verify_file(path)
    assert not report.ok
    assert len(report.corrupt_chunks) == 1
    bad = report.corrupt_chunks[0]
    assert bad["offset"] == (2, 2, 0, 0)
    assert bad["frames"] == [14, 15]
    assert "fletcher32 mismatch" in bad["error"]
    assert "frames 14..15" in report.summary()
    assert report.chunks_checked == SCAN[0] * SCAN[1] // 2


def test_a_flipped_checksum_byte_is_caught(tmp_path):
    path = tmp_path / "flipsum.h5"
    write(path)
    start, size = chunk_location(path, (0, 0, 0, 0))
    flip(path, start + size - 2)  # inside the 4 stored checksum bytes
    report = verify_file(path)
    assert [c["frames"] for c in report.corrupt_chunks] == [[0, 1]]
    assert not report.ok


def test_a_flipped_byte_in_a_compressed_chunk_is_caught(tmp_path):
    path = tmp_path / "flipz.h5"
    write(path, "bitshuffle-lz4")
    start, size = chunk_location(path, (3, 4, 0, 0))
    flip(path, start + size // 2)
    report = verify_file(path)
    assert not report.ok
    assert [c["frames"] for c in report.corrupt_chunks] == [[22, 23]]


def test_dropped_frames_are_reported_but_are_not_corruption(tmp_path):
    path = tmp_path / "dropped.h5"
    write(path, skip=(3, 20))
    report = verify_file(path)
    assert report.ok
    assert report.dropped_indices == [3, 20]
    assert report.frames_received == SCAN[0] * SCAN[1] - 2
    assert "dropped frames: 3, 20" in report.summary()


def test_missing_and_unreadable_files_fail(tmp_path):
    assert not verify_file(tmp_path / "nope.h5").ok
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all" * 10)
    report = verify_file(junk)
    assert not report.ok
    assert "unreadable" in report.summary()


def test_a_foreign_hdf5_file_fails_with_what_is_missing(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    report = verify_file(path)
    assert not report.ok
    assert "missing file attributes" in report.summary()
    assert FRAMES_PATH in report.summary()


class _Recording:
    """A dataset stand-in that logs writes and flushes, then does them on the real one."""

    def __init__(self, ds, name, log):
        self._ds, self._name, self._log = ds, name, log

    def __getattr__(self, attr):
        return getattr(self._ds, attr)

    def __getitem__(self, sel):
        return self._ds[sel]

    def __setitem__(self, sel, value):
        self._log.append(f"{self._name}.write")
        self._ds[sel] = value

    def flush(self):
        self._log.append(f"{self._name}.flush")
        self._ds.flush()


@pytest.mark.parametrize("compression", [None, "bitshuffle-lz4"])
def test_the_received_map_is_written_only_after_the_frames_are_flushed(tmp_path, compression):
    # A reader (or a crash) must never see the map claim a frame whose chunk and chunk
    # index are not on disk yet: every write of the map follows a flush of the frames.
    rng = np.random.default_rng(2)
    data = rng.integers(0, 999, size=(SCAN[0] * SCAN[1], *FRAME), dtype=np.uint16)
    log: list[str] = []
    w = FrameWriter(
        tmp_path / "order.h5",
        scan_shape=SCAN,
        frame_shape=FRAME,
        dtype=np.uint16,
        compression=compression,
        chunk_frames=2,
    )
    w.open()
    try:
        w._frames = _Recording(w._frames, "frames", log)
        w._received_ds = _Recording(w._received_ds, "received", log)
        for i in range(data.shape[0]):
            w.submit(i, data[i : i + 1])
    finally:
        w.close()
    writes = [i for i, entry in enumerate(log) if entry == "received.write"]
    assert len(writes) >= SCAN[0]  # at least one flush per completed row
    for i in writes:
        assert log[i - 1] == "frames.flush", log
        assert log[i + 1] == "received.flush", log
    assert log[-1] == "received.flush"


def test_a_chunk_the_received_map_claims_but_that_is_not_on_disk_is_reported(tmp_path):
    path = tmp_path / "claims.h5"
    write(path, skip=(8, 9))  # chunk (1, 2) holds frames 8, 9: never written
    os.chmod(path, 0o644)
    with h5py.File(path, "r+") as f:
        f["/received"][1, 2:4] = 1  # the map now claims frames 8 and 9
    report = verify_file(path)
    assert not report.ok
    assert report.corrupt_chunks == [
        {
            "offset": (1, 2, 0, 0),
            "frames": [8, 9],
            "error": "not on disk, but the received map claims these frames",
        }
    ]
    assert report.frames_unverified == 2
    assert "corrupt chunk at (1, 2, 0, 0) (frames 8..9): not on disk" in report.summary()
