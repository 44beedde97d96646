"""A FrameWriter process killed (SIGKILL) or stopped (SIGSTOP) mid-scan: ``bluestem verify``
reads what it wrote, ``--repair`` makes it readable without SWMR and touches only the
superblock, and refuses while the writer is alive."""

from __future__ import annotations

import inspect
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bluestem.frames import FRAMES_PATH, RECEIVED_PATH, FrameReader, FrameWriter, verify_file
from bluestem.frames.repair import read_superblock

pytestmark = pytest.mark.system

BLUESTEM = Path(sys.executable).with_name("bluestem")
SCAN = (6, 5)
FRAME = (32, 32)
ROWS = 3  # complete rows the child writes (each flushed at its end)


def expected_frame(i):
    """Frame ``i`` as the child writes it: deterministic, different for every index."""
    import numpy as np

    # Hashed, so that compression cannot shrink the file back under the address its
    # superblock had when SWMR writing began.
    pixels = (np.arange(1024, dtype=np.uint64) + 1024 * i) * 2654435761
    return ((pixels >> 11) % 65521).astype(np.uint16).reshape(32, 32)


CHILD = (
    inspect.getsource(expected_frame)
    + """
import sys, time
import numpy as np
from bluestem.frames import FrameWriter

path, rows, compression = sys.argv[1], int(sys.argv[2]), sys.argv[3]
w = FrameWriter(
    path, scan_shape=(6, 5), frame_shape=(32, 32), dtype=np.uint16, chunk_frames=2,
    compression=None if compression == "none" else compression, flush_interval=0.1,
)
w.open()
for i in range(rows * 5):
    w.submit(i, expected_frame(i)[None])
# Half a chunk of the next row: staged in memory, never on disk, never in the map.
w.submit(rows * 5, expected_frame(rows * 5)[None])
print("submitted", flush=True)
time.sleep(120)
"""
)


def start_writer(path, compression="none"):
    """The child writer, once the file shows ROWS flushed rows in its received map."""
    proc = subprocess.Popen(
        [sys.executable, "-P", "-c", CHILD, str(path), str(ROWS), compression],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        if path.exists():
            try:
                with h5py.File(path, "r", swmr=True) as f:
                    if int(f[RECEIVED_PATH][...].sum()) == ROWS * SCAN[1]:
                        return proc
            except OSError:
                pass  # created, not yet in SWMR mode
        time.sleep(0.05)
    stop(proc)
    raise AssertionError(f"the writer did not flush {ROWS} rows within 30 s")


def stop(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    proc.wait(timeout=30)
    proc.stderr.close()


def bluestem(*args):
    return subprocess.run(
        [str(BLUESTEM), "verify", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def expected_held():
    n = ROWS * SCAN[1]
    return n, np.stack([expected_frame(i) for i in range(n)])


def check_report(report, path):
    n, expected = expected_held()
    assert report.ok, report.summary()
    assert not report.closed
    assert report.frames_received == n and report.frames_unverified == 0
    assert report.received_ranges == [[0, n - 1]]
    assert report.corrupt_chunks == []
    assert f"the received map shows {n} of {SCAN[0] * SCAN[1]} frames" in report.summary()
    with FrameReader(path) as reader:  # our own SWMR reader reads a crashed file too
        held = np.concatenate([reader.read(a, b - a + 1) for a, b in report.received_ranges])
        assert reader.received(0, n + 1).tolist() == [True] * n + [False]
    np.testing.assert_array_equal(held, expected)


@pytest.mark.parametrize("compression", ["none", "bitshuffle-lz4"])
def test_a_killed_writer_leaves_a_file_verify_reads_and_repair_opens(tmp_path, compression):
    path = tmp_path / "killed.h5"
    proc = start_writer(path, compression)
    try:
        proc.kill()
        proc.wait(timeout=30)
    finally:
        stop(proc)

    # The problem as reported: plain h5py (LiberTEM, py4DSTEM, RosettaSciIO) cannot open it.
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")
    report = verify_file(path)
    check_report(report, path)
    assert "writer killed" in report.summary()

    sb = read_superblock(path)
    assert sb.flags == 0x05 and sb.eof_address < os.path.getsize(path)  # stale while SWMR
    before = path.read_bytes()
    done = bluestem("--repair", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{path}: repaired" in done.stdout
    assert "status flags 0x05 -> 0x00" in done.stdout
    assert f"end-of-file address {sb.eof_address} -> {len(before)}" in done.stdout
    assert f"{path}: OK" in done.stdout

    after = path.read_bytes()
    end = sb.offset + len(sb.raw)
    assert len(after) == len(before)
    assert after[: sb.offset] == before[: sb.offset] and after[end:] == before[end:]
    assert after[sb.offset : end] != before[sb.offset : end]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444

    n, expected = expected_held()
    import hdf5plugin  # noqa: F401  (bitshuffle)

    with h5py.File(path, "r") as f:  # no SWMR; the filter pipeline checks fletcher32
        assert int(f[RECEIVED_PATH][...].sum()) == n
        frames = f[FRAMES_PATH][:ROWS].reshape(-1, *FRAME)
    np.testing.assert_array_equal(frames, expected)
    assert verify_file(path).closed


def test_a_stopped_writer_is_verified_but_not_repaired(tmp_path):
    path = tmp_path / "stopped.h5"
    proc = start_writer(path)
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        report = verify_file(path)
        check_report(report, path)
        assert f"writer still running: open for writing by process {proc.pid} (" in (
            report.summary()
        )
        before, mode = path.read_bytes(), os.stat(path).st_mode
        refused = bluestem("--repair", path)
        assert refused.returncode == 1
        assert f"not repaired: {path}: still open for writing by process {proc.pid}" in (
            refused.stdout
        )
        assert "its writer is alive (running or stopped)" in refused.stdout
        assert path.read_bytes() == before and os.stat(path).st_mode == mode
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        stop(proc)
    done = bluestem("--repair", path)
    assert done.returncode == 0 and f"{path}: repaired" in done.stdout, done.stdout


def test_a_closed_file_verifies_as_before_and_has_nothing_to_repair(tmp_path):
    path = tmp_path / "good.h5"
    with FrameWriter(path, scan_shape=(2, 3), frame_shape=FRAME, dtype=np.uint16) as w:
        w.submit(0, np.stack([expected_frame(i) for i in range(6)]))
    line = f"{path}: OK - 2 chunks checked, 0 corrupt, 6/6 frames received, 0 dropped\n"
    plain = bluestem(path)
    assert (plain.returncode, plain.stdout) == (0, line)

    before, st = path.read_bytes(), os.stat(path)
    repaired = bluestem("--repair", path)
    assert repaired.returncode == 0
    assert repaired.stdout == (
        f"{path}: nothing to repair\n"
        "  closed by its writer: superblock status flags are already 0x00\n" + line
    )
    assert path.read_bytes() == before
    assert (os.stat(path).st_mode, os.stat(path).st_mtime_ns) == (st.st_mode, st.st_mtime_ns)
