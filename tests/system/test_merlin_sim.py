"""``bluestem merlin-sim`` as a real process on loopback, read with bluestem's Merlin
client: every counter depth binary and raw, single chip and quad, soft triggers, the
detector's refusals, and the injected faults (a dropped frame is a gap, never a shift; a
broken or cut-off message is an error naming its offset).

The frames come from a 4D HDF5 file the test writes (random counts), so what must arrive
is computed here independently: the file's frames, clipped to the counter depth and
centred on the detector."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from bluestem.ioc.merlin.client import MerlinControl, MerlinData, MerlinRefused
from bluestem.ioc.merlin.protocol import ProtocolError
from bluestem.procs import BLUESTEM_COMMAND, start_merlin_sim

pytestmark = pytest.mark.system

SCAN = (3, 4)


@pytest.fixture(scope="module")
def frames_file(tmp_path_factory):
    """A 4D file of random counts up to 2**24 - 1 (so every depth saturates some)."""
    rng = np.random.default_rng(11)
    counts = rng.integers(0, 2**24, (*SCAN, 256, 256), dtype=np.uint32)
    counts[counts > 2**13] %= 5000  # most values small, some above every depth but 24
    path = tmp_path_factory.mktemp("merlin") / "frames.h5"
    with h5py.File(path, "w") as f:
        f["data/frames"] = counts
    return path, counts.reshape(-1, 256, 256)


def start(tmp_path_factory, *args):
    log = tmp_path_factory.mktemp("merlin-log") / "sim.log"
    return start_merlin_sim(args, log_path=log)


@pytest.fixture(scope="module")
def sim(frames_file, tmp_path_factory):
    proc = start(tmp_path_factory, "--frames-from", str(frames_file[0]))
    yield proc
    assert proc.stop() == 0, proc.log()
    assert "merlin-sim: stopped" in proc.log()


def acquire(proc, n: int, settings: dict, *, chunk: int = 16, expect: int | None = None):
    """Run one acquisition of ``n`` frames and read ``expect`` (default ``n``) of them, or
    until the detector closes the connection: (header text, parsed, numbers, frames)."""
    data = MerlinData("127.0.0.1", proc.data_port).connect()
    try:
        with MerlinControl("127.0.0.1", proc.command_port) as control:
            wait_idle(control)  # the last acquisition's thread has ended
            for name, value in {"NUMFRAMESTOACQUIRE": n, "ACQUISITIONTIME": 0.01,
                                "ACQUISITIONPERIOD": 0.01, **settings}.items():  # fmt: skip
                control.set(name, value)
            control.cmd("STARTACQUISITION")
            text, parsed = data.read_acquisition_header()
            numbers, frames = [], []
            while sum(map(len, numbers)) < (n if expect is None else expect):
                batch = data.read_frames(chunk)
                if batch is None:
                    break
                numbers.append(batch.numbers)
                frames.append(batch.frames)
    finally:
        data.close()
    return text, parsed, np.concatenate(numbers), np.concatenate(frames)


def wait_idle(control, timeout: float = 10.0) -> None:
    """Until DETECTORSTATUS reads 0 (the acquisition thread has finished)."""
    deadline = time.monotonic() + timeout
    while control.get("DETECTORSTATUS") != "0":
        assert time.monotonic() < deadline, "the detector stayed busy"
        time.sleep(0.02)


@pytest.mark.parametrize("raw", [False, True], ids=["binary", "raw"])
@pytest.mark.parametrize("depth", [1, 6, 12, 24])
def test_every_depth_arrives_exactly(sim, frames_file, depth, raw):
    _path, counts = frames_file
    n = 20  # more than the file holds: the frames go round it
    text, parsed, numbers, frames = acquire(sim, n, {"COUNTERDEPTH": depth,
                                                     "FILEFORMAT": 2 if raw else 0})  # fmt: skip
    assert numbers.tolist() == list(range(1, n + 1))
    expected = np.minimum(counts[np.arange(n) % len(counts)], 2**depth - 1)
    assert frames.shape == (n, 256, 256)
    assert np.array_equal(frames.astype(np.uint32), expected)
    assert parsed["Counter Depth (number)"] == str(depth)
    assert parsed["Frames in Acquisition (Number)"] == str(n)
    assert text.startswith("HDR,") and "End" in text


def test_a_quad_gets_the_frames_centred(frames_file, tmp_path_factory):
    _path, counts = frames_file
    proc = start(tmp_path_factory, "--chips", "4", "--frames-from", str(frames_file[0]))
    try:
        with MerlinControl("127.0.0.1", proc.command_port) as control:
            assert (control.get("IMAGEX"), control.get("IMAGEY")) == ("512", "512")
        for raw in (False, True):
            _t, parsed, numbers, frames = acquire(proc, 5, {"COUNTERDEPTH": 12,
                                                            "FILEFORMAT": 2 * raw})  # fmt: skip
            expected = np.zeros((5, 512, 512), np.uint32)
            expected[:, 128:384, 128:384] = np.minimum(counts[:5], 4095)
            assert numbers.tolist() == [1, 2, 3, 4, 5]
            assert np.array_equal(frames.astype(np.uint32), expected), f"raw={raw}"
            assert "2x2" in parsed["Assembly Size (NX1, 2X2)"]
    finally:
        assert proc.stop() == 0


def test_soft_triggers_start_each_series(sim, frames_file):
    data = MerlinData("127.0.0.1", sim.data_port, timeout=5).connect()
    try:
        with MerlinControl("127.0.0.1", sim.command_port) as control:
            for name, value in (("NUMFRAMESTOACQUIRE", 6), ("NUMFRAMESPERTRIGGER", 3),
                                ("TRIGGERSTART", 5), ("COUNTERDEPTH", 12),
                                ("FILEFORMAT", 0)):  # fmt: skip
                control.set(name, value)
            control.cmd("STARTACQUISITION")
            data.read_acquisition_header()
            assert control.get("DETECTORSTATUS") == "1"  # waiting for its trigger
            with pytest.raises(TimeoutError):  # nothing before the trigger
                data._sock.settimeout(0.5)
                data._sock.recv(1, socket.MSG_PEEK)
            got = []
            for _ in range(2):
                control.cmd("SOFTTRIGGER")
                batch = data.read_frames(3)
                while len(batch.numbers) < 3:  # a series may arrive in pieces
                    more = data.read_frames(3 - len(batch.numbers))
                    batch = type(batch)(np.concatenate([batch.numbers, more.numbers]),
                                        np.concatenate([batch.frames, more.frames]),
                                        batch.header)  # fmt: skip
                got.append(batch.numbers.tolist())
            assert got == [[1, 2, 3], [4, 5, 6]]
            wait_idle(control)
            control.set("TRIGGERSTART", 0)  # accepted again once the acquisition ended
    finally:
        data.close()


def test_refusals_name_the_command_and_change_nothing(sim):
    with MerlinControl("127.0.0.1", sim.command_port) as control:
        control.set("COUNTERDEPTH", 12)
        for name, value, status in (("COUNTERDEPTH", 8, 3), ("TRIGGERSTART", 6, 3),
                                    ("ACQUISITIONTIME", 0, 3), ("FILEFORMAT", 1, 3),
                                    ("NOSUCHTHING", 1, 2), ("IMAGEX", 512, 2)):  # fmt: skip
            with pytest.raises(MerlinRefused) as err:
                control.set(name, value)
            assert err.value.status == status
            assert f"SET {name} {value}" in str(err.value)
        control.set("COUNTERDEPTH", 24)
        with pytest.raises(MerlinRefused, match="status 3"):  # no 24-bit continuous RW
            control.set("CONTINUOUSRW", 1)
        assert control.get("CONTINUOUSRW") == "0"
        assert control.get("COUNTERDEPTH") == "24"
        with pytest.raises(MerlinRefused, match="status 2"):
            control.get("NOSUCHTHING")
        # busy while acquiring: a long series, stopped at once
        control.set("COUNTERDEPTH", 12)
        control.set("NUMFRAMESTOACQUIRE", 100000)
        control.set("ACQUISITIONPERIOD", 1.0)
        control.cmd("STARTACQUISITION")
        with pytest.raises(MerlinRefused, match="status 1"):
            control.set("NUMFRAMESTOACQUIRE", 5)
        with pytest.raises(MerlinRefused, match="status 1"):
            control.cmd("STARTACQUISITION")
        control.cmd("STOPACQUISITION")
        wait_idle(control)
        assert control.get("NUMFRAMESTOACQUIRE") == "100000"


def test_faults_drop_corrupt_truncate_and_disconnect(frames_file, tmp_path_factory):
    path, counts = frames_file
    proc = start(tmp_path_factory, "--frames-from", str(path), "--faults",
                 "drop=3,4@1;corrupt=5@2;truncate=4@3;disconnect=3@4")  # fmt: skip
    settings = {"COUNTERDEPTH": 12, "FILEFORMAT": 0}
    try:
        # 1: frames 3 and 4 never come: the numbers jump, each frame is still its own
        _t, _p, numbers, frames = acquire(proc, 8, settings, expect=6)
        assert numbers.tolist() == [1, 2, 5, 6, 7, 8]
        assert np.array_equal(frames.astype(np.uint32), np.minimum(counts[numbers - 1], 4095))
        # 2: a garbled header tag is an error naming the offset of its message
        with pytest.raises(ProtocolError, match=r"offset \d+.*MQ1"):
            acquire(proc, 8, settings, chunk=1)
        # 3: a message cut off is an EOFError naming where
        with pytest.raises(EOFError, match="closed inside"):
            acquire(proc, 8, settings, chunk=1)
        # 4: the connection closes before frame 3: the frames before it arrived whole
        _t, _p, numbers, _f = acquire(proc, 8, settings, chunk=1)
        assert numbers.tolist() == [1, 2]
        # 5: the detector is fine again; a new connection gets everything
        _t, _p, numbers, _f = acquire(proc, 8, settings)
        assert numbers.tolist() == list(range(1, 9))
        log = proc.log()
        assert "frame 4 cut off" in log and "closed before frame 3" in log
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port-base", "5"], "--port-base '5': allowed 0 (free ports) or 1024..65534"),
        (["--frames-from", "/nonexistent/x.h5"], "'/nonexistent/x.h5': no such file"),
        (["--faults", "explode=3"], "--faults entry 'explode=3': allowed kinds"),
        (["--faults", "drop=0"], "allowed frame numbers >= 1"),
        (["--scan", "0x4"], "--scan '0x4': allowed NYxNX"),
        (["--dose", "-1"], "--dose -1.0: allowed 0 < dose <= 1e9"),
    ],
)
def test_bad_options_are_refused_naming_them(args, words):
    result = subprocess.run([sys.executable, "-P", "-c", BLUESTEM_COMMAND, "merlin-sim",
                             "--port-base", "0", *args], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert words in result.stderr
