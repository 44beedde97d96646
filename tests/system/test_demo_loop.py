"""``bluestem demo --loop`` end to end: real IOCs with hidden states, an embedded
catalogue, autofocus, PACBED thickness and the adaptive survey; the iteration tables, the
truth, the PNGs."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys

import pytest

from bluestem.callbacks.loop_figures import figure_size

pytestmark = pytest.mark.system


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_demo_loop_runs_both_loops_to_convergence(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
    result = subprocess.run(
        [sys.executable, "-P", "-c", "import sys; from bluestem.cli import main; sys.exit(main())",
         "demo", "--loop", "--out", str(out)],
        capture_output=True, text=True, timeout=400, env=env,
    )  # fmt: skip
    text, err = result.stdout, result.stderr
    assert result.returncode == 0, text + err
    assert (
        "demo --loop OK: 3 of 3 loop(s) converged (autofocus yes, pacbed yes, survey yes)" in text
    )
    uids = dict(re.findall(r"^(autofocus|pacbed): converged after \d iteration\(s\) in "
                           r"[\d.]+ s; loop (\S+)$", text, re.MULTILINE))  # fmt: skip
    assert set(uids) == {"autofocus", "pacbed"}
    assert text.count("(iteration table from the catalogue)") == 3
    # the figure of the last iteration: autofocus has C1, A1, its angle, the settings and
    # the A1 plane; PACBED its thickness, the chi2 curve and the two patterns the record
    # holds (measured, best library entry): the figure's size says which panels it has
    panels = {"autofocus": 5, "pacbed": 4}
    for name, uid in uids.items():
        # the iteration table, as `bluestem loop show` prints it
        assert f"closed loop {uid}: success (converged after" in text
        assert f"replay:   bluestem loop show {uid[:8]} --catalog http://127.0.0.1:" in text
        method = "PACBED" if name == "pacbed" else "BF parallax"
        rows = re.findall(rf"^ +(\d+)  .* {method}", text, re.MULTILINE)
        assert rows and rows == [str(i) for i in range(len(rows))]
        # the live view: a line per iteration on stderr, a PNG per iteration and "latest"
        goal = "specimen thickness" if name == "pacbed" else "autofocus"
        lines = re.findall(rf"^closed loop {goal}: iteration (\d+) \[", err, re.MULTILINE)
        assert lines == rows, err
        pngs = sorted(p.name for p in (out / "png").glob(f"loop-{uid[:8]}-*.png"))
        assert pngs == [f"loop-{uid[:8]}-it{int(i):02d}.png" for i in rows] + [
            f"loop-{uid[:8]}-latest.png"
        ]
        width, height = figure_size(panels[name])
        expected = (round(width * 100), round(height * 100))  # the session's LoopView: 100 dpi
        assert png_size(out / "png" / f"loop-{uid[:8]}-latest.png") == expected
    assert " -> converged (within tolerance)" in err
    assert " -> converged (converged: the best library entry is inside the library)" in err
    # the truth beside the result; the demo's fixed hidden states
    assert "the column hides C1 +120.00 nm, A1 30.00 nm @ 40.0 deg" in text
    assert re.search(r"error:    the probe now has C1 [+-]\d\.\d\d nm, \|A1\| \d\.\d\d nm "
                     r"\(within the 2 nm tolerance\)", text)  # fmt: skip
    assert "the specimen is 20.000 nm thick" in text
    assert re.search(r"error:    [+-]0\.\d{3} nm \(within 1 nm\)", text)
    assert (out / "truth-autofocus.json").exists() and (out / "truth-pacbed.json").exists()
    # the survey: three fine scans, each within 10 % of its 8 nm field of its particle
    # 7 iterations (survey, 3 x track and fine), up to 3 more fine scans re-centred
    survey = re.search(r"^survey: converged after (?:7|8|9|10) iteration\(s\) in [\d.]+ s; "
                       r"loop (\S+)$",
                       text, re.MULTILINE)  # fmt: skip
    assert survey, text
    misses = [float(m) for m in re.findall(r"fine \d:   centred (\d+\.\d\d) nm from", text)]
    assert len(misses) == 3 and max(misses) <= 0.8, text
    assert re.search(r"error:    worst \d\.\d\d nm \(within 10 % of the 8 nm field\)", text)
    assert (out / "png" / f"loop-{survey.group(1)[:8]}-latest.png").exists()
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\) stopped", text)]
    assert len(pids) == 4  # three IOCs and the catalogue
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")


def test_hidden_states_drawn_from_a_seed_stay_in_range():
    import random

    from bluestem.cli._demo_loop import EXPERIMENTS
    from bluestem.ioc.backend import parse_specimen_parameters
    from bluestem.ioc.hidden import parse_column, parse_drift

    autofocus, pacbed, survey = EXPERIMENTS
    for seed in range(50):
        h = autofocus.hidden(random.Random(seed))
        assert abs(h["C1"]) <= 200e-9 and 0 <= h["A1"] <= 50e-9
        args = autofocus.ioc_args(h)
        column = parse_column(args[args.index("--column") + 1])
        assert column.c1 == pytest.approx(h["C1"]) and column.a1 == pytest.approx(h["A1"])
        assert 8e-9 <= pacbed.hidden(random.Random(seed))["thickness"] <= 40e-9
        h = survey.hidden(random.Random(seed))
        args = survey.ioc_args(h)
        (drift,) = [a for a in args if a.startswith("--drift=")]
        vy, vx = parse_drift(drift.split("=", 1)[1])
        assert (vy, vx) == pytest.approx((h["drift"][0] * 1e-9, h["drift"][1] * 1e-9))
        assert max(abs(vy), abs(vx)) <= 0.3e-9
        first = args.index("--specimen-param") + 1
        spec = parse_specimen_parameters("nanoparticles", args[first : args.index(drift)])
        assert spec["seed"] == h["seed"] and spec["radius"] == (1.5e-9, 3e-9)
    assert autofocus.hidden(None) == {"C1": 120e-9, "A1": 30e-9, "A1_angle_deg": 40.0}
