"""``bluestem ioc replay`` as a real process: a file the twin's IOC recorded, and a plain
4D HDF5 file of another shape and type, replayed through the same PVs — the new files,
and a session's catalogue run with its live reduction, hold the stored frames exactly;
bad files and sizes are refused naming them."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
from ioc_client import configure_scan, frames_of, run_scan

from bluestem.frames import verify_file
from bluestem.procs import BLUESTEM_COMMAND

pytestmark = pytest.mark.system

SCAN = (6, 8)


@pytest.fixture(scope="module")
def recorded(sim):
    """A raster of the shared twin IOC: (path, frames (n, 32, 32))."""
    ca = sim[1]
    configure_scan(ca, shape=SCAN, frame=32, name="to-replay")
    path = run_scan(ca)
    frames, received = frames_of(path)
    assert received.all()
    return path, frames.reshape(-1, 32, 32)


@pytest.fixture(scope="module")
def replay(sim_factory, recorded):
    ioc, ca, data = sim_factory("--file", recorded[0], "--max-rate", ioc="replay")
    return ioc, ca, data


def test_a_recorded_file_replays_frame_for_frame(replay, recorded):
    ioc, ca, _ = replay
    assert (ca.get("DET:cam1:SizeX"), ca.get("DET:cam1:SizeY")) == (32, 32)
    assert ca.get("DET:cam1:CounterDepth") == "12"
    configure_scan(ca, shape=SCAN, frame=32, name="replayed")
    path = run_scan(ca)
    assert verify_file(path).ok
    frames, received = frames_of(path)
    assert received.all()
    np.testing.assert_array_equal(frames.reshape(-1, 32, 32), recorded[1])
    with h5py.File(path, "r") as f:
        replayed = dict(f["metadata/replay"].attrs)
    assert replayed["file"] == str(recorded[0]) and int(replayed["file_frames"]) == 48
    assert "48 frames of 32x32" in ioc.log()


def test_a_longer_raster_goes_round_the_file(replay, recorded):
    _ioc, ca, _ = replay
    configure_scan(ca, shape=(10, 10), frame=32, name="longer")
    frames, received = frames_of(run_scan(ca))
    assert received.all()
    np.testing.assert_array_equal(frames.reshape(-1, 32, 32),
                                  recorded[1][np.arange(100) % 48])  # fmt: skip


def test_a_replayed_raster_runs_through_the_session_and_catalogue(replay, recorded,
                                                                  tmp_path_factory):  # fmt: skip
    import secrets

    from sessions import inventory
    from tiled.client import from_uri

    from bluestem.catalog import start_server
    from bluestem.plans import raster
    from bluestem.session import build_session

    ioc, _ca, ioc_data = replay
    data = ioc_data / "session"  # the IOC writes only under its data root
    data.mkdir()
    server = start_server(tmp_path_factory.mktemp("replay-catalog"),
                          api_key=secrets.token_hex(16), raw_dirs=[data])  # fmt: skip
    try:
        s = build_session(inventory(ioc, data, tmp_path_factory.mktemp("replay-journal"),
                                    server=server))  # fmt: skip
        try:
            (uid,) = s.RE(raster(s.det, s.scan, shape=SCAN, dwell=1e-4, fov=4.0))
            assert s.writer.flush(60)
        finally:
            s.close()
        client = from_uri(server.uri, api_key=server.api_key)
        run = client[uid]
        frames = np.asarray(run["primary"]["det_image"].read()).reshape(-1, 32, 32)
        np.testing.assert_array_equal(frames, recorded[1])
        # the live reduction ran on the replayed frames: its derived run is there
        from tiled.queries import Key

        derived = client.search(Key("start.parent_uid") == uid)
        assert len(derived) == 1
        (child,) = derived.values()
        sums = np.asarray(child["primary"]["sum_dp"].read())
        np.testing.assert_allclose(sums.reshape(32, 32), recorded[1].astype(np.float64).sum(0))
    finally:
        server.stop()


def test_any_4d_file_of_its_own_shape_and_type(sim_factory, tmp_path):
    path = tmp_path / "plain.h5"
    counts = np.random.default_rng(3).integers(0, 200, (3, 5, 40, 48), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f["entry/small"] = np.zeros((2, 2, 4, 4), np.uint8)  # not the largest: not chosen
        f["entry/data/frames"] = counts
    ioc, ca, _ = sim_factory("--file", str(path), "--max-rate", ioc="replay")
    assert (ca.get("DET:cam1:SizeX"), ca.get("DET:cam1:SizeY")) == (48, 40)
    assert ca.get("DET:cam1:CounterDepth") == "6"
    ca.put("DET:cam1:TriggerMode", "External")
    ca.put("SCAN:ShapeY", 3)
    ca.put("SCAN:ShapeX", 5)
    ca.put("DET:HDF1:FileName", "plain")
    frames, received = frames_of(run_scan(ca))
    assert received.all() and frames.dtype == np.uint8
    # a 6-bit counter holds at most 63: the stored counts, saturated
    np.testing.assert_array_equal(frames, np.minimum(counts, 63))
    # a frame size other than the file's is refused, naming what is allowed
    ca.put("DET:cam1:SizeX", 32)
    with pytest.raises(Exception, match="the replayed file holds 48x40"):
        ca.put("DET:HDF1:Capture", 1)
    assert ioc.alive()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (None, "--file '{path}': no such file"),
        (lambda p: p.write_text("not hdf5"), "--file '{path}': not an HDF5 file"),
        (
            lambda p: h5py.File(p, "w").create_dataset("x", data=np.zeros((4, 4))),
            "no dataset of 3 or 4 dimensions",
        ),
        (
            lambda p: h5py.File(p, "w").create_dataset("x", data=np.zeros((2, 4, 4), np.float32)),
            "frames of float32: allowed uint8, uint16 or uint32",
        ),
    ],
    ids=["missing", "not-hdf5", "no-frames", "float"],
)
def test_a_bad_file_is_refused_naming_it(tmp_path, make, words):
    path = tmp_path / "bad.h5"
    if make is not None:
        handle = make(path)
        if hasattr(handle, "file"):
            handle.file.close()
    command = [sys.executable, "-P", "-c", BLUESTEM_COMMAND, "ioc", "replay", "--prefix",
               "BAD:", "--file", str(path), "--data-dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words.format(path=path) in result.stderr
    assert "nothing served" in result.stderr
