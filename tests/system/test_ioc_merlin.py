"""``bluestem ioc merlin`` against ``bluestem merlin-sim``, both real processes: a raster
through the same PVs as the twin's IOC lands the detector's frames in their places in a
verified file, with the acquisition header stored verbatim; a frame the detector skipped
is dropped, never shifted; a cut-off message fails the acquisition (STATUS FAULT, the
file valid up to it) and the next acquisition reconnects; a wrong frame size is refused.

The simulator sends the frames of a 4D file written here, so what the file must hold is
computed independently: those frames, in order, clipped to the 12-bit counter."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from ioc_client import configure_scan, frames_of, run_scan

from bluestem.frames import verify_file
from bluestem.frames.layout import reserved_text
from bluestem.procs import start_merlin_sim

pytestmark = pytest.mark.system

SCAN = (6, 8)


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    """(path, frames): random counts, some above the 12-bit range."""
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 300, (*SCAN, 256, 256), dtype=np.uint32)
    frames[:, :, 100:110, 100:110] = 5000  # saturates a 12-bit counter
    path = tmp_path_factory.mktemp("merlin-frames") / "frames.h5"
    with h5py.File(path, "w") as f:
        f["frames"] = frames
    return path, frames.reshape(-1, 256, 256)


def merlin_pair(sim_factory, tmp_path_factory, counts, *faults: str):
    """(merlin-sim process, IOC process, CA): a simulator and the IOC reading it."""
    sim = start_merlin_sim(["--frames-from", str(counts[0]), *faults],
                           log_path=tmp_path_factory.mktemp("sim-log") / "sim.log")  # fmt: skip
    try:
        ioc, ca, _data = sim_factory("--host", "127.0.0.1", "--command-port",
                                     str(sim.command_port), "--data-port", str(sim.data_port),
                                     ioc="merlin")  # fmt: skip
    except BaseException:
        sim.stop()
        raise
    return sim, ioc, ca


@pytest.fixture(scope="module")
def merlin(sim_factory, tmp_path_factory, counts):
    sim, ioc, ca = merlin_pair(sim_factory, tmp_path_factory, counts)
    yield sim, ioc, ca
    assert sim.stop() == 0


def expected(counts, n: int) -> np.ndarray:
    """The first ``n`` frames the simulator sends, as a 12-bit counter holds them."""
    frames = counts[1]
    return np.minimum(frames[np.arange(n) % len(frames)], 4095).astype(np.uint16)


def test_a_raster_records_the_merlins_frames_in_place(merlin, counts):
    _sim, ioc, ca = merlin
    assert (ca.get("DET:cam1:SizeX"), ca.get("DET:cam1:SizeY")) == (256, 256)
    assert ca.get("DET:cam1:MaxSizeX_RBV") == 256
    configure_scan(ca, shape=SCAN, frame=256, name="merlin")
    path = run_scan(ca)
    report = verify_file(path)
    assert report.ok, report.summary()
    assert report.frames_received == SCAN[0] * SCAN[1]
    frames, received = frames_of(path)
    assert received.all()
    n = SCAN[0] * SCAN[1]
    np.testing.assert_array_equal(frames.reshape(n, 256, 256), expected(counts, n))
    with h5py.File(path, "r") as f:
        header = reserved_text(f["metadata/merlin/acquisition_header"])
        merlin = dict(f["metadata/merlin"].attrs)
    assert header.startswith("HDR,")
    assert f"Frames in Acquisition (Number):\t{n}" in header
    assert "Counter Depth (number):\t12" in header
    assert merlin["source"] == "merlin" and merlin["file_format"] == "raw"
    assert ca.get("STATUS") == "OK"
    assert ca.get("DET:HDF1:DroppedFrames_RBV") == 0
    assert "Merlin" in ioc.log() and "sensor 256x256" in ioc.log()


DTYPES = {1: np.uint8, 6: np.uint8, 12: np.uint16, 24: np.uint32}


def every_depth(ca, counts, *, sensor: int, name: str) -> list[int]:
    """A small raster at each counter depth: the file holds exactly what was sent (the
    file's frames, clipped to the depth, centred on a ``sensor``² detector)."""
    shape, n = (3, 4), 12
    done = []
    for depth in (1, 6, 12, 24):
        ca.put("DET:cam1:CounterDepth", str(depth))
        configure_scan(ca, shape=shape, frame=sensor, name=f"{name}-{depth}bit")
        path = run_scan(ca)
        report = verify_file(path)
        assert report.ok and report.frames_received == n, report.summary()
        frames, received = frames_of(path)
        assert received.all() and frames.dtype == DTYPES[depth]
        sent = np.zeros((n, sensor, sensor), np.uint32)
        lo = (sensor - 256) // 2
        sent[:, lo : lo + 256, lo : lo + 256] = np.minimum(counts[1][:n], 2**depth - 1)
        got = frames.reshape(n, sensor, sensor)
        np.testing.assert_array_equal(got, sent.astype(DTYPES[depth]), err_msg=f"{depth}-bit")
        with h5py.File(path, "r") as f:
            header = reserved_text(f["metadata/merlin/acquisition_header"])
        assert f"Counter Depth (number):\t{depth}" in header
        done.append(depth)
    ca.put("DET:cam1:CounterDepth", "12")
    return done


def test_every_counter_depth_single_chip_raw(merlin, counts):
    assert every_depth(merlin[2], counts, sensor=256, name="single") == [1, 6, 12, 24]


def test_every_counter_depth_quad_binary(sim_factory, tmp_path_factory, counts):
    sim = start_merlin_sim(["--frames-from", str(counts[0]), "--chips", "4"],
                           log_path=tmp_path_factory.mktemp("quad-log") / "sim.log")  # fmt: skip
    try:
        _ioc, ca, _ = sim_factory("--host", "127.0.0.1", "--command-port",
                                  str(sim.command_port), "--data-port", str(sim.data_port),
                                  "--binary", ioc="merlin")  # fmt: skip
        assert ca.get("DET:cam1:MaxSizeX_RBV") == 512
        assert every_depth(ca, counts, sensor=512, name="quad") == [1, 6, 12, 24]
    finally:
        assert sim.stop() == 0


def test_a_wrong_frame_size_is_refused_naming_the_sensor(merlin):
    _sim, _ioc, ca = merlin
    configure_scan(ca, shape=(2, 2), frame=128, name="wrong-size")
    try:
        with pytest.raises(Exception, match="the Merlin reads out 256x256"):  # refused
            ca.put("DET:HDF1:Capture", 1)
        message = ca.get_str("DET:HDF1:WriteMessage")
        assert "the Merlin reads out 256x256" in message, message
        assert ca.get("DET:HDF1:Capture_RBV") == 0
    finally:
        ca.put("DET:cam1:SizeX", 256)
        ca.put("DET:cam1:SizeY", 256)


def test_skipped_frames_drop_and_a_cut_message_faults_then_it_reconnects(
    sim_factory, tmp_path_factory, counts
):
    sim, _ioc, ca = merlin_pair(sim_factory, tmp_path_factory, counts,
                                 "--faults", "drop=10,11@1;truncate=20@2")  # fmt: skip
    n = SCAN[0] * SCAN[1]
    try:
        # 1: the detector skips frames 10 and 11 (indices 9, 10): missing, not shifted
        configure_scan(ca, shape=SCAN, frame=256, name="skipped")
        path = run_scan(ca)
        frames, received = frames_of(path)
        frames, received = frames.reshape(n, 256, 256), received.reshape(n)
        assert np.flatnonzero(received == 0).tolist() == [9, 10]
        kept = np.flatnonzero(received)
        np.testing.assert_array_equal(frames[kept], expected(counts, n)[kept])
        assert ca.get("DET:HDF1:DroppedFrames_RBV") == 2
        assert verify_file(path).ok
        # 2: frame 20's message is cut off: the acquisition fails, the file keeps 1..19
        configure_scan(ca, shape=SCAN, frame=256, name="cut")
        path = run_scan(ca)
        assert ca.get("STATUS") == "FAULT"
        assert "closed inside" in ca.get_str("STATUS:Message")
        report = verify_file(path)
        assert report.ok, report.summary()
        frames, received = frames_of(path)
        frames, received = frames.reshape(n, 256, 256), received.reshape(n)
        assert received[:19].all() and not received[19:].any()
        np.testing.assert_array_equal(frames[:19], expected(counts, n)[:19])
        # 3: the detector is back: the next acquisition reconnects and records everything
        configure_scan(ca, shape=SCAN, frame=256, name="again")
        path = run_scan(ca)
        frames, received = frames_of(path)
        assert received.all()
        np.testing.assert_array_equal(frames.reshape(n, 256, 256), expected(counts, n))
    finally:
        assert sim.stop() == 0


def test_a_session_raster_through_the_merlin_is_in_the_catalogue_frame_for_frame(
    merlin, counts, tmp_path_factory
):
    """The session, its devices and the raster plan, unchanged, against the Merlin IOC:
    the catalogue serves the frames the simulator sent."""
    import secrets

    from sessions import inventory
    from tiled.client import from_uri

    from bluestem.catalog import start_server
    from bluestem.plans import raster
    from bluestem.session import build_session

    _sim, ioc, ca = merlin
    data = Path(ca.get_str("DET:HDF1:FilePath_RBV")) / "session"  # under the IOC's data root
    data.mkdir()
    server = start_server(tmp_path_factory.mktemp("merlin-catalog"),
                          api_key=secrets.token_hex(16), raw_dirs=[data])  # fmt: skip
    try:
        s = build_session(inventory(ioc, data, tmp_path_factory.mktemp("merlin-journal"),
                                    server=server))  # fmt: skip
        try:
            (uid,) = s.RE(raster(s.det, s.scan, shape=SCAN, dwell=1e-4, fov=4.0,
                                 md={"detector": "merlin-sim"}))  # fmt: skip
            assert s.writer.flush(60)
        finally:
            s.close()
        run = from_uri(server.uri, api_key=server.api_key)[uid]
        assert run.metadata["stop"]["exit_status"] == "success"
        frames = run["primary"]["det_image"].read()
        n = SCAN[0] * SCAN[1]
        np.testing.assert_array_equal(np.asarray(frames).reshape(n, 256, 256),
                                      expected(counts, n))  # fmt: skip
    finally:
        server.stop()
    assert ioc.alive()
