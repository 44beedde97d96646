"""PACBED thickness against the real IOC and catalogue: IOCs rendering SrTiO3 [001] by
multislice at a thickness only their truth files know; ``pacbed_thickness`` recovers it
within 1 nm, and the umbrella run in the catalogue holds the fit and the library."""

from __future__ import annotations

import json
import time

import pytest
from sessions import inventory, set_frame

pytestmark = pytest.mark.system

NM = 1e-9
FRAME = 64
THICKNESSES = (12e-9, 33e-9)  # m, the IOCs' hidden truth


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pacbed-cache")


@pytest.fixture(scope="module", params=THICKNESSES, ids=lambda t: f"{t / NM:g}nm")
def measured(request, sim, sim_factory, server, cache, tmp_path_factory):
    """One IOC per thickness, a session on it, one ``pacbed_thickness`` loop:
    ``(LoopRecord of the umbrella from the catalogue, truth document, seconds)``."""
    from tiled.client import from_uri

    from bluestem.loop import read_loop
    from bluestem.plans import pacbed_thickness
    from bluestem.session import build_session

    _, _, data = sim  # the catalogue serves this directory's raw files
    truth = tmp_path_factory.mktemp("truth") / "truth.json"
    ioc, ca, _ = sim_factory(
        "--seed", "11", "--specimen", "srtio3", "--specimen-param",
        f"thickness={request.param!r}", "multislice=true", "--truth", str(truth),
        data_dir=data,
    )  # fmt: skip
    set_frame(ca, FRAME)
    ca.put("MIC:ConvergenceAngle", 10.0)  # mrad
    ca.put("MIC:CameraLength", 60.0)  # mm: 0.92 mrad a pixel, +-29 mrad on 64 pixels
    session = build_session(inventory(ioc, data, tmp_path_factory.mktemp("journal"),
                                      server=server))  # fmt: skip
    try:
        t0 = time.perf_counter()
        uids = session.RE(
            pacbed_thickness(
                session.det, session.scan, session.mic, cache_dir=str(cache), md={"test": "pacbed"}
            )
        )
        seconds = time.perf_counter() - t0
        assert session.writer.flush(60)
    finally:
        session.close()
    client = from_uri(server.uri, api_key=server.api_key)
    (umbrella,) = [u for u in uids if client[u].metadata["start"].get("plan_name")
                   == "closed_loop"]  # fmt: skip
    return read_loop(client[umbrella].documents()), json.loads(truth.read_text()), seconds


def test_the_thickness_is_recovered_within_1_nm(measured):
    record, truth, seconds = measured
    given = truth["specimen"]["parameters"]["thickness"]
    assert truth["specimen"]["hidden"] == ["thickness"]
    assert record.stop["reason"] == "converged after 1 iteration(s)"
    report = record.iterations[-1].report
    fitted, sigma = report["thickness"], report["uncertainty"]
    print(f"true {given / NM:.3f} nm (rendered {truth['specimen']['rendered_thickness'] / NM:.3f}"
          f"), fitted {fitted / NM:.3f} +- {sigma / NM:.3f} nm, reduced chi2 "
          f"{report['reduced_chi2']:.3f}, {seconds:.1f} s")  # fmt: skip
    assert fitted == pytest.approx(given, abs=1 * NM)
    assert 0 < sigma < 1 * NM


def test_the_umbrella_run_holds_the_fit_and_the_library(measured, server):
    from tiled.client import from_uri
    from tiled.queries import Key

    record, truth, _ = measured
    client = from_uri(server.uri, api_key=server.api_key)
    run = client[record.uid]
    start = run.metadata["start"]
    assert start["plan_name"] == "closed_loop" and start["test"] == "pacbed"
    assert start["closed_loop"]["agent"]["class"].endswith("PacbedThicknessAgent")
    assert start["closed_loop"]["goal"]["quantity"] == "specimen thickness"
    assert run.metadata["stop"]["exit_status"] == "success"
    (row,) = record.iterations
    assert row.decision == "converged" and row.requested == {}
    assert row.readback["mic_convergence_angle"] == pytest.approx(10.0)
    analysis = row.analysis
    library = analysis["model"]["library"]
    assert library["optics"]["convergence_semi_angle"] == pytest.approx(10e-3)
    assert library["optics"]["high_tension"] == pytest.approx(200e3)
    assert library["detector"]["shape"] == [FRAME, FRAME]
    assert library["angle_per_pixel"] == pytest.approx(55e-6 / 60e-3)
    assert analysis["model"]["cache"]["source"] in ("computed", "disk", "memory")
    fit = analysis["fit"]
    assert (
        len(fit["reduced_chi2"]) == len(fit["library_thicknesses"]) == len(library["thicknesses"])
    )
    assert fit["thickness"] == analysis["values"]["thickness"] == row.report["thickness"]
    assert analysis["uncertainties"]["thickness"] == fit["uncertainty"]
    assert set(analysis["alignment"]) >= {"centre", "scale", "rotation"}
    assert analysis["parameters"]["frames"] == 64
    # the acquisition is its own run, linked to the umbrella; its file hides the truth
    (uid,) = client.search(Key("start.closed_loop.uid") == record.uid)
    assert row.inputs == [uid] and client[uid].metadata["start"]["plan_name"] == "raster"
    text = json.dumps(client[uid].metadata["start"])
    given = truth["specimen"]["parameters"]["thickness"]
    assert repr(given) not in text and f"{given:g}" not in text
