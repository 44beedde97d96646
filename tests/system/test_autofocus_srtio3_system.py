"""Autofocus on a crystal against the real IOC: SrTiO3 [001] with a hidden residual C1 and
A1, nulled by the double-disc overlap phase (``method="overlap"``, no defocus offset), and
every iteration in the catalogue."""

from __future__ import annotations

import cmath
import json
import math
import secrets
import time

import pytest
from sessions import inventory, set_frame

pytestmark = pytest.mark.system

FRAME = 128
CAMERA_LENGTH = 183.0  # mm: 0.30 mrad per pixel, the BF disc (10 mrad) 33 pixels
SHAPE = (32, 32)
LATTICE = 0.3905  # nm, SrTiO3
FOV = SHAPE[0] * LATTICE / 8  # nm: a/8 steps (<= λ / 4α = 0.63 Å; a multiple of a/32)
DWELL = 2e-4  # s: 10 pA -> ~12500 electrons per frame
TOLERANCE = 2e-9
SLACK = 1e-12
#: (C1 m, A1 m, A1 angle deg) hidden in the column.
STATES = {
    "c1+150_a1-40@25": (150e-9, 40e-9, 25.0),
    "c1-190_a1-20@-60": (-190e-9, 20e-9, -60.0),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("autofocus-srtio3-data")


@pytest.fixture(scope="module")
def catalog(data_dir, tmp_path_factory):
    from bluestem.catalog import start_server

    handle = start_server(tmp_path_factory.mktemp("autofocus-srtio3-catalog"),
                          api_key=secrets.token_hex(16), raw_dirs=[data_dir])  # fmt: skip
    yield handle
    handle.stop()
    assert not handle.alive()


@pytest.fixture(scope="module", params=sorted(STATES))
def focused(request, sim_factory, data_dir, catalog, tmp_path_factory):
    """Autofocus run once per hidden state: ``(state, result, setpoints, truth, wall)``."""
    from bluestem.plans import autofocus
    from bluestem.session import build_session

    c1, a1, deg = STATES[request.param]
    truth = tmp_path_factory.mktemp("truth") / "truth.json"
    column = f"C1={c1!r},A1={a1!r}@{deg}deg"
    ioc, ca, _ = sim_factory("--specimen", "srtio3", "--seed", "5", "--column", column,
                             "--truth", str(truth), data_dir=data_dir)  # fmt: skip
    set_frame(ca, FRAME)
    ca.put("MIC:ConvergenceAngle", 10.0)
    ca.put("MIC:CameraLength", CAMERA_LENGTH)
    s = build_session(inventory(ioc, data_dir, tmp_path_factory.mktemp("journal"),
                                server=catalog, metadata={"sample": "SrTiO3 [001]",
                                                          "operator": "ada"}))  # fmt: skip
    try:
        t0 = time.monotonic()
        out = []

        def keep(plan):
            out.append((yield from plan))

        s.RE(keep(autofocus(s.det, s.scan, s.mic, shape=SHAPE, fov=FOV, dwell=DWELL,
                            tolerance=TOLERANCE, method="overlap",
                            md={"purpose": "system test"})))  # fmt: skip
        (result,) = out
        wall = time.monotonic() - t0
        assert s.writer.flush(60)
        state = {
            "defocus": s.mic.defocus.get(),
            "astigmatism": s.mic.astigmatism.get(),
            "angle": s.mic.astigmatism_angle.get(),
        }
        yield request.param, result, state, json.loads(truth.read_text()), wall
    finally:
        s.close()


def effective(state: dict, hidden: dict) -> tuple[float, float]:
    """The probe's C1 and |A1| (m) at the final setpoints: setpoint + hidden residual."""
    c1 = state["defocus"] * 1e-9 + hidden["C1"]
    z = state["astigmatism"] * 1e-9 * cmath.exp(2j * math.radians(state["angle"]))
    z += hidden["A1"] * cmath.exp(2j * hidden["A1_angle"])
    return c1, abs(z)


def test_overlap_autofocus_nulls_the_hidden_residual(focused):
    name, result, state, truth, wall = focused
    c1, a1 = effective(state, truth["hidden"]["column"])
    last = truth["acquisitions"][str(max(map(int, truth["acquisitions"])))]
    # no offset: the last acquisition was taken at the final setpoints
    assert last["setpoint"]["defocus"] == pytest.approx(state["defocus"] * 1e-9, abs=0.06e-9)
    assert last["effective"]["C1"] == pytest.approx(c1, abs=0.06e-9)
    assert last["effective"]["A1"] == pytest.approx(a1, abs=0.1e-9)
    for number, entry in sorted(truth["acquisitions"].items(), key=lambda kv: int(kv[0])):
        eff = entry["effective"]
        print(f"  acquisition {number}: true C1 {eff['C1'] * 1e9:+.2f} nm, "
              f"A1 {eff['A1'] * 1e9:.2f} nm @ {eff['A1_angle_deg']:.1f} deg")  # fmt: skip
    print(f"autofocus {name}: {result.iterations} iteration(s), {wall:.1f} s, final "
          f"C1 {c1 * 1e9:+.2f} nm, |A1| {a1 * 1e9:.2f} nm; {result.reason}")  # fmt: skip
    assert result.converged, result.reason
    assert result.iterations <= 5
    assert abs(c1) <= TOLERANCE + SLACK, f"final C1 {c1 * 1e9:+.2f} nm"
    assert a1 <= TOLERANCE + SLACK, f"final |A1| {a1 * 1e9:.2f} nm"
    assert result.report["reliable"] is True


def test_every_overlap_iteration_is_in_the_catalogue(focused, catalog):
    from tiled.client import from_uri

    from bluestem.loop import read_loop

    _name, result, _state, _truth, _wall = focused
    client = from_uri(catalog.uri, api_key=catalog.api_key)
    run = client[result.uid]
    start = run.metadata["start"]
    assert start["plan_name"] == "closed_loop"
    assert start["autofocus"]["method"] == "overlap"
    assert start["autofocus"]["c1_offset"] == 0.0
    assert run.metadata["stop"]["exit_status"] == "success"
    rows = read_loop(run.documents()).iterations
    assert len(rows) == result.iterations and rows[-1].decision == "converged"
    # the crystal gives overlaps: even the first fit (the full residual) is reliable
    assert rows[0].analysis["reliable"] is True and rows[0].analysis["explained"] > 0.9
    for row in rows:
        analysis = row.analysis
        assert analysis["method"].startswith("double-disc overlap")
        assert analysis["parameters"]["method"] == "overlap"
        assert analysis["parameters"]["c1_offset"] == pytest.approx(0.0, abs=0.06e-9)
        assert analysis["parameters"]["c3"] == pytest.approx(1.2e-3)  # MIC:Cs_RBV
        assert len(analysis["fit"]["reflections"]) >= 2
        assert set(analysis["values"]) == {"c1", "a1", "a1_angle"}
