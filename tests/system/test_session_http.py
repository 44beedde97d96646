"""A session built from a YAML inventory, a raster, and the raw 4D stream read over HTTP.

Real ``bluestem ioc sim`` (shared ``sim`` fixture) and a real ``bluestem serve`` whose
readable storage is the IOC's data directory.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import yaml
from ioc_client import twin_of

pytestmark = pytest.mark.system

FRAME = 64
SHAPE = (16, 16)


@pytest.fixture(scope="module")
def session(sim, server, tmp_path_factory):
    from bluestem.session import build_session

    ioc, ca, data = sim
    ca.put("DET:cam1:SizeX", FRAME)
    ca.put("DET:cam1:SizeY", FRAME)
    ca.put("DET:cam1:BinX", 1)
    inventory = {
        "devices": [
            {"class": "bluestem.devices.Microscope", "prefix": "${BST_PFX}MIC:", "name": "mic"},
            {
                "class": "bluestem.devices.ScanGenerator",
                "prefix": "${BST_PFX}SCAN:",
                "name": "scan",
            },
            {
                "class": "bluestem.devices.PixelatedDetector",
                "prefix": "${BST_PFX}DET:",
                "name": "det",
            },
        ],
        "data_root": str(data),
        "journal_dir": str(tmp_path_factory.mktemp("journal")),
        "catalog": {"uri": server.uri, "api_key": "${BST_TEST_KEY}"},
        "metadata": {"sample": "SrTiO3", "operator": "ada"},
        "baseline": ["mic"],
        "namespace": ["bluestem.plans"],
        "connect_timeout": 30,
    }
    path = tmp_path_factory.mktemp("cfg") / "session.yml"
    path.write_text(yaml.safe_dump(inventory))
    mp = pytest.MonkeyPatch()
    mp.setenv("BST_PFX", ioc.prefix)
    mp.setenv("BST_TEST_KEY", server.api_key)
    s = build_session(path)
    yield s
    s.close()
    mp.undo()


def test_session_has_devices_callbacks_and_metadata(session):
    from bluestem.devices import Microscope, PixelatedDetector

    assert isinstance(session.mic, Microscope) and session.devices["mic"] is session.mic
    assert isinstance(session.det, PixelatedDetector)
    assert list(session.callbacks) == ["journal", "writer", "progress", "live", "loop", "summary"]
    assert session.RE.md["sample"] == "SrTiO3" and session.RE.md["operator"] == "ada"
    assert session.catalog is not None
    ns = session.namespace()
    assert ns["RE"] is session.RE and ns["scan"] is session.scan
    from bluestem.plans import raster

    assert ns["raster"] is raster
    (pre,) = session.RE.preprocessors
    assert pre.baseline == [session.mic]


def test_raster_reads_back_over_http(session, server, capsys):
    from tiled.client import from_uri

    from bluestem.frames import verify_file
    from bluestem.plans import raster

    (uid,) = session.RE(raster(session.det, session.scan, shape=SHAPE, dwell=1e-4,
                               microscope=session.mic))  # fmt: skip
    assert session.writer.flush(120)
    assert session.writer.failures == {}
    # The raw run, then the derived run of its live reduction (linked by parent_uid).
    assert session.writer.synced == [uid, session.live.derived_uid]
    assert session.progress.frames == 256 and session.progress.dropped == 0
    assert "256/256 frames" in capsys.readouterr().err

    client = from_uri(server.uri, api_key=server.api_key)
    run = client[uid]
    start = run.metadata["start"]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert start["plan_name"] == "raster" and start["sample"] == "SrTiO3"
    assert start["operator"] == "ada"
    base = run["baseline"].read()
    assert len(base["time"]) == 2
    assert "mic_high_tension" in base

    # The raw stream as Tiled serves it, from the detector's HDF5 file.
    raw = run["primary"]["det_image"].read()
    assert raw.shape == (*SHAPE, FRAME, FRAME)
    path = session.det.hdf.full_file_name.get(as_string=True)
    if not os.path.isabs(path):
        path = os.path.join(session.det.root_path.get(), path)
    assert verify_file(path).ok
    with h5py.File(path, "r") as f:
        from bluestem.frames import FRAMES_PATH

        stored = f[FRAMES_PATH][()]
    np.testing.assert_array_equal(np.asarray(raw), stored)
    expected = twin_of(path).render(0, SHAPE[0] * SHAPE[1]).reshape(*SHAPE, FRAME, FRAME)
    np.testing.assert_array_equal(np.asarray(raw), expected)
    assert expected.sum() > 0

    # One frame as a slice (how analysts read raw frames remotely).
    np.testing.assert_array_equal(run["primary"]["det_image"][3, 5], stored[3, 5])
