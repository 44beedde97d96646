"""Live reduction end to end: real IOC, real Tiled server, a session, ``bluestem reduce``.

A raster runs with the session's LiveReduction and LiveImages (headless: PNGs); the
derived run must be in the catalogue, linked by ``parent_uid``, with images equal to an
independent float64 numpy computation from the raw file; ``bluestem reduce`` (a real
subprocess) must recompute them bit for bit, locally and on a Dask LocalCluster; bad
input to the plan and to the command must be refused by name with nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.system

FRAME = 64
SHAPE = (16, 16)
CLI = [sys.executable, "-P", "-c", "import sys; from bluestem.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def session(sim, server, tmp_path_factory):
    from bluestem.session import build_session

    ioc, ca, data = sim
    for pv, value in (("DET:cam1:SizeX", FRAME), ("DET:cam1:SizeY", FRAME),
                      ("DET:cam1:BinX", 1), ("DET:cam1:BinY", 1)):  # fmt: skip
        ca.put(pv, value)
    devices = [("Microscope", "MIC:", "mic"), ("ScanGenerator", "SCAN:", "scan"),
               ("PixelatedDetector", "DET:", "det")]  # fmt: skip
    inventory = {
        "devices": [
            {"class": f"bluestem.devices.{c}", "prefix": ioc.prefix + p, "name": n}
            for c, p, n in devices
        ],
        "data_root": str(data),
        "journal_dir": str(tmp_path_factory.mktemp("journal")),
        "catalog": {"uri": server.uri, "api_key": server.api_key},
        "metadata": {"sample": "SrTiO3", "operator": "ada"},
        "baseline": ["mic"],
        "connect_timeout": 30,
        "live": {"images": True, "out_dir": str(tmp_path_factory.mktemp("live"))},
        "progress": False,
    }
    s = build_session(inventory)
    yield s
    s.close()


@pytest.fixture(scope="module")
def live_run(session):
    from bluestem.plans import raster

    (uid,) = session.RE(raster(session.det, session.scan, shape=SHAPE, dwell=1e-4,
                               microscope=session.mic))  # fmt: skip
    assert session.writer.flush(120) and session.writer.failures == {}
    return uid


def client(server):
    from tiled.client import from_uri

    return from_uri(server.uri, api_key=server.api_key)


def derived_runs(server, parent):
    from tiled.queries import Key

    found = client(server).search(Key("start.parent_uid") == parent)
    return {uid: found[uid] for uid in found}


def images_of(run) -> dict:
    stream = run["primary"]
    # One event holds the images: Tiled serves each as (1, ...) (the event axis first).
    return {name: np.asarray(stream[name].read())[0] for name in run.metadata["start"]["images"]}


def raw_path(session) -> str:
    path = session.det.hdf.full_file_name.get(as_string=True)
    return path if os.path.isabs(path) else os.path.join(session.det.root_path.get(), path)


def test_the_derived_run_is_in_the_catalogue_and_equals_numpy(session, server, live_run):
    from bluestem.frames import FRAMES_PATH
    from bluestem.reduce import ReductionSpec

    live = session.live
    # Every frame reached the live images while the scan ran, none only at the stop.
    assert live.snapshot()["frames"] == SHAPE[0] * SHAPE[1]
    derived = derived_runs(server, live_run)
    assert list(derived) == [live.derived_uid]
    run = derived[live.derived_uid]
    start = run.metadata["start"]
    assert start["sample"] == "SrTiO3" and run.metadata["stop"]["exit_status"] == "success"
    spec = ReductionSpec.from_dict(start["reduction"])
    parent = client(server)[live_run].metadata["start"]
    assert parent["reduction"] == start["reduction"]  # the plan recorded it first
    stored = images_of(run)
    assert {"bf", "adf", "com_x", "com_y", "idpc", "ddpc"} <= set(stored)
    for name, image in live.result["images"].items():
        assert np.array_equal(stored[name], image, equal_nan=True), name

    with h5py.File(raw_path(session), "r") as f:
        frames = f[FRAMES_PATH][()].astype(np.float64).reshape(-1, FRAME, FRAME)
    for name, mask in spec.masks().items():
        ref = np.einsum("nij,ij->n", frames, mask.astype(np.float64)).reshape(SHAPE)
        np.testing.assert_allclose(stored[name], ref, rtol=1e-6)
    assert np.nanstd(stored["bf"]) > 0  # the lattice shows

    pngs = {p.name.split("-")[0] for p in session.images.saved}
    assert {"bf", "adf", "com", "idpc", "dp"} <= pngs
    assert all(p.stat().st_size > 0 for p in session.images.saved)


def reduce_cli(server, *args, check=True):
    proc = subprocess.run(
        [*CLI, "reduce", *args, "--catalog", server.uri, "--api-key", server.api_key],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def new_derived(server, parent, before: set) -> dict:
    runs = derived_runs(server, parent)
    (uid,) = set(runs) - before
    return images_of(runs[uid]), runs[uid].metadata["start"]


@pytest.mark.parametrize("how", [[], ["--scheduler", "local", "--workers", "2"]],
                         ids=["local", "dask-localcluster"])  # fmt: skip
def test_bluestem_reduce_recomputes_the_live_images_bit_for_bit(session, server, live_run, how):
    before = set(derived_runs(server, live_run))
    proc = reduce_cli(server, live_run, *how)
    assert "derived run:" in proc.stdout
    images, start = new_derived(server, live_run, before)
    assert start["reduction_mode"] == ("distributed" if how else "offline")
    live = session.live.result["images"]
    assert set(images) == set(live)
    for name in live:
        assert np.array_equal(images[name], live[name], equal_nan=True), name


def test_bluestem_reduce_with_new_masks(session, server, live_run, tmp_path):
    from bluestem.frames import FRAMES_PATH

    mask = np.zeros((FRAME, FRAME), np.float32)
    mask[:, : FRAME // 2] = 0.5
    np.save(tmp_path / "left.npy", mask)
    before = set(derived_runs(server, live_run))
    reduce_cli(server, live_run, "--bf", "5", "--mask", str(tmp_path / "left.npy"))
    images, start = new_derived(server, live_run, before)
    assert set(images) == {"bf", "left", "sum_dp", "max_dp"}
    with h5py.File(raw_path(session), "r") as f:
        frames = f[FRAMES_PATH][()].astype(np.float64)
    np.testing.assert_allclose(images["left"], (frames * mask).sum(axis=(2, 3)), rtol=1e-6)
    yy, xx = np.indices((FRAME, FRAME))
    cy, cx = start["reduction"]["centre"]
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= 5.0**2
    np.testing.assert_allclose(images["bf"], (frames * disk).sum(axis=(2, 3)), rtol=1e-6)


def test_bad_input_is_refused_by_name_and_nothing_is_written(session, server, live_run, tmp_path):
    from bluestem.plans import raster

    np.save(tmp_path / "small.npy", np.ones((8, 8), np.float32))
    before = set(derived_runs(server, live_run))
    proc = reduce_cli(server, live_run, "--mask", str(tmp_path / "small.npy"), check=False)
    assert proc.returncode == 2
    assert "(8, 8)" in proc.stderr and f"({FRAME}, {FRAME})" in proc.stderr
    proc = reduce_cli(server, live_run, "--bf", "-2", check=False)
    assert proc.returncode == 2 and "-2" in proc.stderr
    proc = reduce_cli(server, "no-such-run", check=False)
    assert proc.returncode == 2 and "no-such-run" in proc.stderr
    assert set(derived_runs(server, live_run)) == before

    runs_before = len(client(server))
    for bad, words in (({"bf": -1.0}, "-1"), ({"bogus": 1}, "bogus"), ("bf", "'bf'")):
        with pytest.raises(ValueError, match=words):
            session.RE(raster(session.det, session.scan, shape=SHAPE, dwell=1e-4,
                              reductions=bad))  # fmt: skip
    assert session.writer.flush(60)
    assert len(client(server)) == runs_before


def test_bluestem_reduce_takes_a_uid_prefix_and_names_the_pngs_by_the_raw_run(
    session, server, live_run, tmp_path
):
    before = set(derived_runs(server, live_run))
    proc = reduce_cli(server, live_run[:8], "--out", str(tmp_path))
    assert f"(parent {live_run}, offline)" in proc.stdout
    (derived,) = set(derived_runs(server, live_run)) - before
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{p}-{live_run[:8]}.png"
                           for p in ("bf", "adf", "com", "idpc", "ddpc", "dp"))  # fmt: skip
    assert derived[:8] not in "".join(names)  # the derived run is named in the titles only
    # The live PNGs of the session have the same names.
    assert {p.name for p in session.images.saved} >= set(names)


def write_runs(server, uids):
    """Bare runs (start, stop) with the given uids, written as the session writes."""
    import event_model

    from bluestem.catalog.client import tiled_writer

    writer = tiled_writer(client(server))
    for uid in uids:
        run = event_model.compose_run(uid=uid, metadata={"plan_name": "prefix-test"})
        writer("start", run.start_doc)
        writer("stop", run.compose_stop())


def test_an_ambiguous_or_unknown_uid_prefix_is_refused_with_the_matches(server, live_run):
    twins = ["deadbeef-0000-4000-8000-000000000001", "deadbeef-0000-4000-8000-000000000002"]
    write_runs(server, twins)
    runs_before = len(client(server))
    proc = reduce_cli(server, "deadbeef", check=False)
    assert proc.returncode == 2
    assert "uid prefix 'deadbeef' is ambiguous: 2 runs" in proc.stderr
    assert all(uid in proc.stderr for uid in twins) and server.uri in proc.stderr
    proc = reduce_cli(server, "deadbeef-0000-4000-8000-00000000000", check=False)
    assert proc.returncode == 2 and "ambiguous" in proc.stderr
    # LIKE's wildcard '_' must not match: "deadbeef_" is no prefix of either uid.
    proc = reduce_cli(server, "deadbeef_", check=False)
    assert proc.returncode == 2
    assert "no run with uid 'deadbeef_'" in proc.stderr and server.uri in proc.stderr
    assert len(client(server)) == runs_before  # nothing written


def test_a_catalogue_refusing_the_prefix_query_is_searched_by_its_keys(
    server, live_run, monkeypatch
):
    import tiled.queries

    from bluestem.cli import reduce as cli_reduce

    c = client(server)
    found = cli_reduce._catalog_uids(c, live_run[:8])
    assert live_run in found and all(uid.lower().startswith(live_run[:8]) for uid in found)
    # Tiled's SQL catalogue refuses Regex (HTTP 400): the same code path as a server that
    # cannot run LIKE.
    monkeypatch.setattr(tiled.queries, "Like", lambda key, pattern: tiled.queries.Regex(
        key, "^" + pattern.rstrip("%")))  # fmt: skip
    with pytest.raises(Exception, match="not supported"):
        c.search(tiled.queries.Like("start.uid", live_run[:8] + "%")).keys()[:1]
    assert cli_reduce._catalog_uids(c, live_run[:8]) == [live_run]


def test_bluestem_reduce_reads_the_journal_of_the_environment(session, live_run):
    from bluestem.callbacks import find_runs

    journal = session.journal.directory
    env = {k: v for k, v in os.environ.items()
           if k not in ("BLUESTEM_CATALOG_URI", "BLUESTEM_API_KEY")}  # fmt: skip
    env["BLUESTEM_JOURNAL_DIR"] = str(journal)
    before = {r.uid for r in find_runs(journal)}
    proc = subprocess.run([*CLI, "reduce", live_run[:8]], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"(parent {live_run}, offline)" in proc.stdout
    (new,) = [r for r in find_runs(journal) if r.uid not in before]
    start = next(doc for name, doc in new.documents() if name == "start")
    assert start["parent_uid"] == live_run and start["derived"] is True
    proc = subprocess.run([*CLI, "reduce", "ffffffff-none"], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 2
    assert f"no run with uid 'ffffffff-none' (or starting with it) in the journal {journal}" in (
        proc.stderr
    )


def test_live_reduction_of_a_scan_with_dropped_and_late_frames(sim_factory, tmp_path):
    """The IOC drops frames 5, 17, 40..42 and delivers 60 and 100 late, while a
    LiveReduction follows the file as it is written (the documents are composed here as
    the detector device does, from the IOC's counters over CA): the images are NaN exactly
    at the dropped positions and hold the late frames where they belong."""
    import event_model
    from event_model import ComposeStreamResource, StreamRange
    from ioc_client import configure_scan

    from bluestem.callbacks import LiveReduction
    from bluestem.devices.stream import RowBatcher
    from bluestem.frames import FRAMES_PATH, RECEIVED_PATH
    from bluestem.reduce import ReductionSpec

    _, ca, _ = sim_factory("--faults", "drop=5,17,40-42;late=60:0.3,100:0.1")
    configure_scan(ca, shape=(16, 16), frame=32, dwell=1e-3, name="live-faults")
    spec = ReductionSpec.default((32, 32), bf_radius=6.0)
    run = event_model.compose_run(metadata={"scan": {"shape": [16, 16]},
                                            "reduction": spec.to_dict()})  # fmt: skip
    key = {"source": "det", "dtype": "array", "shape": [16, 32, 32], "external": "STREAM:",
           "dtype_numpy": "<u2"}  # fmt: skip
    desc = run.compose_descriptor(name="primary", data_keys={"det_image": key})
    live = LiveReduction()
    live("start", run.start_doc)
    live("descriptor", desc.descriptor_doc)
    ca.put("DET:HDF1:Capture", 1)
    path = ca.get_str("DET:HDF1:FullFileName_RBV")
    bundle = ComposeStreamResource()(mimetype="application/x-hdf5",
                                     uri=f"file://localhost{path}", data_key="det_image",
                                     parameters={"dataset": FRAMES_PATH})  # fmt: skip
    live("stream_resource", bundle.stream_resource_doc)
    ca.put("DET:cam1:Acquire", 1)
    ca.put("SCAN:Start", 1)
    rows = RowBatcher(16, 16)

    def announce(finished=False):
        got = rows.advance(ca.get("DET:HDF1:NumCaptured_RBV"),
                           ca.get("DET:HDF1:DroppedFrames_RBV"), finished=finished)  # fmt: skip
        if got:
            datum = bundle.compose_stream_datum(indices=StreamRange(start=got[0], stop=got[1]))
            datum["descriptor"] = desc.descriptor_doc["uid"]
            datum["seq_nums"] = {"start": got[0] + 1, "stop": got[1] + 1}
            live("stream_datum", datum)

    while ca.get("DET:HDF1:Capture_RBV") != 0:
        announce()
        time.sleep(0.05)
    announce(finished=True)
    live("stop", run.compose_stop())
    images = live.result["images"]
    with h5py.File(path, "r", swmr=True) as f:
        frames = f[FRAMES_PATH][()].astype(np.float64).reshape(256, 32, 32)
        received = f[RECEIVED_PATH][()].reshape(-1)
    assert np.flatnonzero(received == 0).tolist() == [5, 17, 40, 41, 42]
    bf = images["bf"].reshape(-1)
    assert np.flatnonzero(np.isnan(bf)).tolist() == [5, 17, 40, 41, 42]
    keep = received == 1
    weights = spec.masks()["bf"].astype(np.float64)
    np.testing.assert_allclose(bf[keep], (frames[keep] * weights).sum(axis=(1, 2)), rtol=1e-6)
    assert bf[60] > 0 and bf[100] > 0
