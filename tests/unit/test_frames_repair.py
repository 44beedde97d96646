"""The superblock of a raw-frame file, lookup3, and repair of a file left open by its writer.

A writer that dies leaves the superblock as a SWMR writer keeps it: status flags 0x05
and the end-of-file address of when SWMR writing began. Here that state is made by
rewriting the superblock of a closed file (no processes); tests/system/
test_verify_crash.py kills real writers.
"""

from __future__ import annotations

import os
import stat
import struct

import h5py
import numpy as np
import pytest

from bluestem.frames import FRAMES_PATH, FrameWriter, RepairError, repair_file, verify_file
from bluestem.frames.repair import lookup3, read_superblock

SCAN = (3, 4)
FRAME = (8, 8)


def write(path):
    data = np.arange(SCAN[0] * SCAN[1] * 64, dtype=np.uint16).reshape(-1, *FRAME)
    with FrameWriter(
        path, scan_shape=SCAN, frame_shape=FRAME, dtype=np.uint16, chunk_frames=2
    ) as w:
        w.submit(0, data)
    return data


def left_open(path, flags=0x05, eof=None):
    """Make a closed file look as its writer leaves it when killed."""
    data = write(path)
    sb = read_superblock(path)
    os.chmod(path, 0o644)
    new = sb.rewritten(flags=flags, eof_address=sb.eof_address if eof is None else eof)
    with open(path, "r+b") as fh:
        fh.seek(sb.offset)
        fh.write(new)
    return data


def test_lookup3_matches_jenkins_test_vectors():
    # From lookup3.c's own self-test (driver5).
    assert lookup3(b"") == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161


@pytest.mark.parametrize("sizes", [(8, 8), (4, 4), (2, 2)])
def test_lookup3_matches_the_checksum_hdf5_stores_in_a_superblock(tmp_path, sizes):
    # Offsets of 8, 4 and 2 bytes hash 44, 28 and 20 superblock bytes (tails of 8, 4, 8).
    path = tmp_path / f"sizes{sizes[0]}.h5"
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_sizes(*sizes)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    h5py.h5f.create(str(path).encode(), h5py.h5f.ACC_EXCL, fcpl=fcpl, fapl=fapl).close()
    n = 12 + 4 * sizes[0]
    raw = path.read_bytes()[: n + 4]
    assert raw[:8] == b"\x89HDF\r\n\x1a\n" and raw[8] == 3
    assert lookup3(raw[:n]) == struct.unpack("<I", raw[n:])[0]


def test_the_superblock_of_a_closed_file(tmp_path):
    path = tmp_path / "closed.h5"
    write(path)
    sb = read_superblock(path)
    assert (sb.offset, sb.version, sb.offset_size, sb.flags) == (0, 3, 8, 0)
    assert sb.eof_address == os.path.getsize(path)
    assert sb.checksum_ok and not sb.unclosed
    assert sb.checksum == struct.unpack("<I", path.read_bytes()[44:48])[0]


def test_a_file_left_open_is_verified_and_then_repaired(tmp_path):
    path = tmp_path / "open.h5"
    write(path)
    with h5py.File(path, "r") as f:
        first_chunk = f[FRAMES_PATH].id.get_chunk_info(0).byte_offset
    path.unlink()
    # A SWMR writer leaves the end-of-file address of when SWMR writing began: every
    # object header lies before it, the chunks (mostly) after.
    data = left_open(path, eof=first_chunk)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")
    report = verify_file(path)
    assert report.ok, report.summary()
    assert not report.closed
    assert report.received_ranges == [[0, SCAN[0] * SCAN[1] - 1]]
    assert "not closed by its writer (writer killed" in report.summary()

    before = path.read_bytes()
    result = repair_file(path)
    after = path.read_bytes()
    assert result.repaired
    assert len(after) == len(before) and after[48:] == before[48:] and after != before
    assert any(f"address {first_chunk} -> {len(before)}" in a for a in result.actions)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    with h5py.File(path, "r") as f:  # no SWMR: what LiberTEM and py4DSTEM do
        np.testing.assert_array_equal(f[FRAMES_PATH][...].reshape(-1, *FRAME), data)
    assert verify_file(path).closed


def test_a_clean_file_has_nothing_to_repair_and_is_not_touched(tmp_path):
    path = tmp_path / "clean.h5"
    write(path)
    before, st = path.read_bytes(), os.stat(path)
    result = repair_file(path)
    assert not result.repaired
    assert "nothing to repair" in result.summary()
    assert path.read_bytes() == before
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_mode == st.st_mode


def test_a_truncated_file_is_not_repaired(tmp_path):
    path = tmp_path / "short.h5"
    left_open(path)
    size = os.path.getsize(path)
    os.truncate(path, size - 10)
    before = path.read_bytes()
    with pytest.raises(RepairError, match=f"truncated: the file is {size - 10} bytes, 10 fewer"):
        repair_file(path)
    assert path.read_bytes() == before
    report = verify_file(path)
    assert not report.ok and "truncated" in report.summary()


def test_a_file_open_for_writing_here_is_not_repaired(tmp_path):
    path = tmp_path / "busy.h5"
    left_open(path)
    before = path.read_bytes()
    fd = os.open(path, os.O_RDWR)  # as a live (e.g. stopped) writer holds it
    try:
        with pytest.raises(RepairError, match=f"open for writing by process {os.getpid()} "):
            repair_file(path)
        report = verify_file(path)
        assert report.ok and f"{os.getpid()} (" in report.writers[0]
        assert "writer still running" in report.summary()
    finally:
        os.close(fd)
    assert path.read_bytes() == before
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # mode untouched by the refusal
    assert repair_file(path).repaired


def test_flags_of_a_writer_without_swmr_are_refused(tmp_path):
    path = tmp_path / "noswmr.h5"
    left_open(path, flags=0x01)
    with pytest.raises(RepairError, match="status flags 0x01 are not those of a SWMR writer"):
        repair_file(path)
    report = verify_file(path)
    assert not report.ok and not report.closed
    assert "had not started SWMR writing" in report.summary()


def test_a_superblock_with_a_wrong_checksum_is_refused(tmp_path):
    path = tmp_path / "badsum.h5"
    left_open(path)
    with open(path, "r+b") as fh:
        fh.seek(45)
        fh.write(b"\x00\x00")
    with pytest.raises(RepairError, match="superblock checksum mismatch"):
        repair_file(path)


def test_files_without_a_version_2_or_3_superblock_are_refused(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5" * 200)
    with pytest.raises(ValueError, match="is not an HDF5 file"):
        repair_file(junk)
    old = tmp_path / "v0.h5"
    with h5py.File(old, "w") as f:  # default libver: superblock version 0
        f["x"] = 1
    with pytest.raises(ValueError, match="superblock version 0 is not supported: allowed 2 or 3"):
        repair_file(old)


def test_the_superblock_is_found_after_a_user_block(tmp_path):
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", libver="latest", userblock_size=1024) as f:
        f["x"] = np.arange(5)
    sb = read_superblock(path)
    assert sb.offset == sb.base_address == 1024 and sb.checksum_ok
