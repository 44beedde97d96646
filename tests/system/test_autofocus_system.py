"""Autofocus against the real IOC with a hidden column state: the loop finds and nulls a
residual C1 and A1 that no PV shows (the truth file says what the probe really had), and
every iteration is in the catalogue."""

from __future__ import annotations

import cmath
import itertools
import json
import math
import secrets
import time

import numpy as np
import pytest
from sessions import inventory, set_frame

pytestmark = pytest.mark.system

FRAME = 64
SHAPE = (48, 48)
FOV = 24.0  # nm: 0.5 nm steps
DWELL = 2e-4  # s: 10 pA -> ~12500 electrons per frame
OFFSET = -300e-9
TOLERANCE = 2e-9  # the fit's criterion: |value| + sigma <= TOLERANCE
SLACK = 1e-12  # float rounding of setpoint + residual (the PVs' quantum is 0.1 nm)
#: (C1 m, A1 m, A1 angle deg) hidden in the column.
STATES = {
    "c1+120_a1-30@40": (120e-9, 30e-9, 40.0),
    "c1-80": (-80e-9, 0.0, 0.0),
    "c1-180_a1-15@-70": (-180e-9, 15e-9, -70.0),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("autofocus-data")


@pytest.fixture(scope="module")
def catalog(data_dir, tmp_path_factory):
    from bluestem.catalog import start_server

    handle = start_server(tmp_path_factory.mktemp("autofocus-catalog"),
                          api_key=secrets.token_hex(16), raw_dirs=[data_dir])  # fmt: skip
    yield handle
    handle.stop()
    assert not handle.alive()


@pytest.fixture(scope="module", params=sorted(STATES))
def focused(request, sim_factory, data_dir, catalog, tmp_path_factory):
    """Autofocus run once per hidden state: ``(state, result, session, truth, wall)``."""
    from bluestem.plans import autofocus
    from bluestem.session import build_session

    c1, a1, deg = STATES[request.param]
    truth = tmp_path_factory.mktemp("truth") / "truth.json"
    column = f"C1={c1!r},A1={a1!r}@{deg}deg"
    ioc, ca, _ = sim_factory("--specimen", "nanoparticles", "--seed", "3", "--column",
                             column, "--truth", str(truth), data_dir=data_dir)  # fmt: skip
    set_frame(ca, FRAME)
    ca.put("MIC:ConvergenceAngle", 10.0)  # the BF disc: radius 18 pixels of 64
    s = build_session(inventory(ioc, data_dir, tmp_path_factory.mktemp("journal"),
                                server=catalog, metadata={"sample": "nanoparticles on a-C",
                                                          "operator": "ada"}))  # fmt: skip
    try:
        t0 = time.monotonic()
        out = []

        def keep(plan):
            out.append((yield from plan))

        s.RE(keep(autofocus(s.det, s.scan, s.mic, shape=SHAPE, fov=FOV, dwell=DWELL,
                            c1_offset=OFFSET, tolerance=TOLERANCE,
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


def test_autofocus_nulls_the_hidden_residual(focused):
    name, result, state, truth, wall = focused
    hidden = truth["hidden"]["column"]
    c1, a1 = effective(state, hidden)
    last = truth["acquisitions"][str(max(map(int, truth["acquisitions"])))]
    # the last acquisition was taken at the final setpoints plus the offset: the truth
    # file's effective optics of it agree
    assert last["setpoint"]["defocus"] == pytest.approx(state["defocus"] * 1e-9 + OFFSET,
                                                        abs=0.06e-9)  # fmt: skip
    assert last["effective"]["C1"] - OFFSET == pytest.approx(c1, abs=0.06e-9)
    assert last["effective"]["A1"] == pytest.approx(a1, abs=0.1e-9)
    for number, entry in sorted(truth["acquisitions"].items(), key=lambda kv: int(kv[0])):
        eff = entry["effective"]
        print(
            f"  acquisition {number}: true C1 {(eff['C1'] - OFFSET) * 1e9:+.2f} nm, "
            f"A1 {eff['A1'] * 1e9:.2f} nm @ {eff['A1_angle_deg']:.1f} deg"
        )
    print(
        f"autofocus {name}: {result.iterations} iteration(s), {wall:.1f} s, final "
        f"C1 {c1 * 1e9:+.2f} nm, |A1| {a1 * 1e9:.2f} nm; {result.reason}"
    )
    print(f"  last fit: {result.report}")
    assert result.converged, result.reason
    assert result.iterations <= 5
    assert abs(c1) <= 2e-9 + SLACK, f"final C1 {c1 * 1e9:+.2f} nm"
    assert a1 <= 2e-9 + SLACK, f"final |A1| {a1 * 1e9:.2f} nm"
    assert result.report["reliable"] is True

    assert abs(result.report["c1_nm"]) <= 2.0 and result.report["a1_nm"] <= 2.0


def test_every_iteration_is_in_the_catalogue(focused, catalog):
    from tiled.client import from_uri
    from tiled.queries import Key

    from bluestem.loop import read_loop

    _name, result, _state, _truth, _wall = focused
    client = from_uri(catalog.uri, api_key=catalog.api_key)
    run = client[result.uid]
    assert run.metadata["start"]["plan_name"] == "closed_loop"
    assert run.metadata["start"]["closed_loop"]["agent"]["class"] == (
        "bluestem.plans.autofocus.ParallaxFocusAgent"
    )
    assert run.metadata["stop"]["exit_status"] == "success"
    record = read_loop(run.documents())
    rows = record.iterations
    assert len(rows) == result.iterations
    assert rows[-1].decision == "converged"
    assert rows[0].requested == {}
    # the specimen gives parallax contrast: the first fit (the full residual) is reliable
    assert rows[0].analysis["reliable"] is True
    assert rows[0].analysis["explained"] > 0.9
    for row in rows:
        analysis = row.analysis
        assert set(analysis["values"]) == {"c1", "a1", "a1_angle"}
        assert set(analysis["uncertainties"]) == {"c1", "a1", "a1_angle"}
        assert {"residual", "reliable"} <= set(analysis["fit"])
        assert analysis["parameters"]["c1_offset"] == pytest.approx(OFFSET, abs=0.06e-9)
        assert analysis["parameters"]["c3"] == pytest.approx(1.2e-3)  # MIC:Cs_RBV
        assert set(row.readback) == {"mic_defocus", "mic_astigmatism",
                                     "mic_astigmatism_angle"}  # fmt: skip
    for row in rows:
        _check_parallax_bins(row.analysis)
    for before, after in itertools.pairwise(rows):
        # each correction is minus the previous fit
        assert after.readback["mic_defocus"] == pytest.approx(
            before.readback["mic_defocus"] - before.analysis["values"]["c1"] * 1e9, abs=0.06
        )
    acquisitions = client.search(Key("start.closed_loop.uid") == result.uid)
    linked = {u: acquisitions[u].metadata["start"]["closed_loop"]["iteration"]
              for u in acquisitions}  # fmt: skip
    assert linked == {r.inputs[0]: r.iteration for r in rows}
    for uid in linked:
        assert client[uid].metadata["start"]["plan_name"] == "raster"
        assert client[uid].metadata["stop"]["exit_status"] == "success"


def _check_parallax_bins(analysis) -> None:
    """The stored bins' shifts are the parallax of the fitted defocus: an independent
    least-squares fit of d = −(M θ + t) − C3 |θ|² θ (d = −∇χ: the image moves against
    the probe's tilt) to them gives tr(M)/2 = C1 (+ the offset)."""
    par = analysis["parallax"]
    theta = np.asarray(par["theta"], float)  # (θy, θx), rad
    shifts = np.asarray(par["shifts"], float)  # scan px (dy, dx)
    w = np.asarray(par["weights"], float)
    assert theta.ndim == 2 and theta.shape[1] == 2 and len(theta) >= 6
    assert shifts.shape == theta.shape == np.asarray(par["model_shifts"]).shape
    assert w.shape == (len(theta),) and np.all(w >= 0) and w.sum() > 0
    params = analysis["parameters"]
    assert params["rotation"] == 0.0  # the twin's scan is not rotated
    d = shifts * np.asarray(params["step"], float)  # m
    d += params["c3"] * np.sum(theta**2, axis=1)[:, None] * theta
    design = np.column_stack([theta, np.ones(len(theta))]) * np.sqrt(w)[:, None]
    m, *_ = np.linalg.lstsq(design, d * np.sqrt(w)[:, None], rcond=None)
    c1_total = -0.5 * (m[0, 0] + m[1, 1])
    expected = analysis["values"]["c1"] + params["c1_offset"]
    assert c1_total == pytest.approx(expected, abs=2e-9, rel=0.05)
