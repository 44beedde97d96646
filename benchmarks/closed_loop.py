"""Closed loops against random hidden states: iterations, wall time, frames and the final
error against the twin's truth, per experiment.

Each trial starts a sim IOC whose hidden state (column residual, specimen thickness,
particle layout and drift) is drawn from the trial's seed, builds a session on it (no
catalogue: the journal only), runs the loop and compares the result with the IOC's truth
file. Experiments: ``autofocus`` (BF parallax on nanoparticles, C1 in ±200 nm, |A1| <= 50
nm; done when |C1|, |A1| <= 2 nm in <= 5 iterations), ``autofocus-carbon`` (the same on
the bare amorphous carbon support), ``autofocus-srtio3`` (the overlap
phase on SrTiO3 [001], the same tolerance), ``pacbed`` (SrTiO3 8..40 nm; within 1 nm) and
``survey`` (up to three fine scans, each within 10 % of its 8 nm field of its particle, drift
within ±0.3 nm/s per axis). The setups are the ones of ``bluestem demo --loop``
(``bluestem.cli._demo_loop.EXPERIMENTS``) and of the crystal autofocus system test.

Baseline: the done-when tolerance itself; ``ratio`` is the fraction of all trials that
met it (target 1.0). The last line is one JSON object.

Run: .venv/bin/python benchmarks/closed_loop.py [--trials N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import cmath
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bluestem.cli._demo_loop import (
    EXPERIMENTS,
    NM,
    SURVEY_FINE_FOV,
    Experiment,
    _frame,
    survey_targets,
)

LATTICE = 0.3905  # nm, SrTiO3


def _srtio3_ioc(h: dict) -> list[str]:
    column = f"C1={h['C1']!r},A1={h['A1']!r}@{h['A1_angle_deg']!r}deg"
    return ["--specimen", "srtio3", "--seed", "5", "--column", column]


def _srtio3_plan(session, out: Path):
    from bluestem.plans import autofocus

    return autofocus(session.det, session.scan, session.mic, shape=(32, 32),
                     fov=32 * LATTICE / 8, dwell=2e-4, method="overlap")  # fmt: skip


def _carbon_ioc(h: dict) -> list[str]:
    """The demo's autofocus IOC on the bare amorphous carbon support (no particles)."""
    return [*AUTOFOCUS.ioc_args(h), "--specimen-param", "particles=0"]


AUTOFOCUS = next(e for e in EXPERIMENTS if e.name == "autofocus")
SRTIO3 = Experiment("autofocus-srtio3", AUTOFOCUS.hidden, _srtio3_ioc,
                    lambda s: _frame(s, convergence=10.0, camera_length=183.0, frame=128),
                    _srtio3_plan, AUTOFOCUS.judge)  # fmt: skip
CARBON = Experiment("autofocus-carbon", AUTOFOCUS.hidden, _carbon_ioc, AUTOFOCUS.prepare,
                    AUTOFOCUS.plan, AUTOFOCUS.judge)  # fmt: skip
ALL = {e.name: e for e in (*EXPERIMENTS, SRTIO3, CARBON)}


def _focus_error(result, truth, session) -> tuple[dict, bool]:
    hidden = truth["hidden"]["column"]
    mic = session.mic
    c1 = mic.defocus.get() * NM + hidden["C1"]
    a1 = abs(mic.astigmatism.get() * NM * cmath.exp(2j * math.radians(mic.astigmatism_angle.get()))
             + hidden["A1"] * cmath.exp(2j * hidden["A1_angle"]))  # fmt: skip
    ok = result.converged and result.iterations <= 5 and abs(c1) <= 2 * NM and a1 <= 2 * NM
    return {"c1_nm": c1 / NM, "a1_nm": a1 / NM, "hidden_c1_nm": hidden["C1"] / NM,
            "hidden_a1_nm": hidden["A1"] / NM}, ok  # fmt: skip


def _pacbed_error(result, truth, session) -> tuple[dict, bool]:
    given = truth["specimen"]["parameters"]["thickness"]
    error = result.report.get("thickness", math.inf) - given
    return {"thickness_nm": given / NM, "error_nm": error / NM}, bool(
        result.converged and abs(error) <= 1 * NM)  # fmt: skip


def _survey_error(result, truth, session) -> tuple[dict, bool]:
    spec = truth["specimen"]["parameters"]
    field = float(spec["field"])
    particles = survey_targets(spec)
    entries = [truth["acquisitions"][k] for k in sorted(truth["acquisitions"], key=int)]
    misses = []
    for entry in entries[2::2]:  # survey, then (track, fine) per feature
        off = (particles - np.asarray(entry["displacement"]["scan_centre"]) + field / 2) \
            % field - field / 2  # fmt: skip
        misses.append(float(np.hypot(off[:, 0], off[:, 1]).min()) / NM)
    drift = [v / NM for v in truth["hidden"]["drift"]]
    # Done when every fine scan is centred; a field with fewer than three whole particles
    # gives fewer fine scans (the agent visits what the survey found).
    ok = bool(result.converged and misses and max(misses) <= 0.1 * SURVEY_FINE_FOV)
    return {"worst_nm": max(misses, default=math.inf), "fine_scans": len(misses),
            "drift_nm_s": drift}, ok  # fmt: skip


ERRORS = {"autofocus": _focus_error, "autofocus-srtio3": _focus_error,
          "autofocus-carbon": _focus_error,
          "pacbed": _pacbed_error, "survey": _survey_error}  # fmt: skip


def trial(exp: Experiment, seed: int, work: Path) -> dict:
    from bluestem.procs import ca_environment, free_port, start_ioc
    from bluestem.session import build_session

    hidden = exp.hidden(random.Random(seed))
    truth_path = work / f"truth-{exp.name}-{seed}.json"
    data = work / f"raw-{exp.name}-{seed}"
    env = ca_environment(repeater_port=free_port())
    ioc = start_ioc(args=["--data-dir", str(data), "--max-rate", *exp.ioc_args(hidden),
                          "--truth", str(truth_path)], env=env,
                    log_path=work / f"ioc-{exp.name}-{seed}.log", timeout=120)  # fmt: skip
    inventory = {
        "devices": [{"class": f"bluestem.devices.{c}", "prefix": ioc.prefix + g, "name": n}
                    for c, g, n in (("Microscope", "MIC:", "mic"), ("ScanGenerator", "SCAN:",
                                    "scan"), ("PixelatedDetector", "DET:", "det"))],
        "data_root": str(data), "journal_dir": str(work / "journal"),
        "metadata": {"sample": exp.name, "operator": "benchmark"},
        "ca": {"addr_list": f"127.0.0.1:{env['EPICS_CA_SERVER_PORT']}",
               "auto_addr_list": "NO", "server_port": env["EPICS_CA_SERVER_PORT"],
               "repeater_port": env["EPICS_CA_REPEATER_PORT"]},
        "baseline": ["mic"], "connect_timeout": 30, "progress": False,
        "live": {"images": False},
    }  # fmt: skip
    session = build_session(inventory)
    try:
        exp.prepare(session)
        kept = []

        def keep(plan):
            kept.append((yield from plan))

        t0 = time.monotonic()
        session.RE(keep(exp.plan(session, work)))
        wall = time.monotonic() - t0
        (result,) = kept
        truth = json.loads(truth_path.read_text())
        errors, ok = ERRORS[exp.name](result, truth, session)
        frames = sum(int(np.prod(e["twin_parameters"]["scan"]["shape"]))
                     for e in truth["acquisitions"].values())  # fmt: skip
        return {"experiment": exp.name, "seed": seed, "iterations": result.iterations,
                "wall_s": round(wall, 2), "frames": frames, "ok": ok, **errors}  # fmt: skip
    finally:
        session.close()
        ioc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="hidden states per experiment")
    parser.add_argument("--only", nargs="*", choices=sorted(ALL), default=sorted(ALL))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bluestem-closed-loop-") as tmp:
        for name in args.only:
            for seed in range(args.trials):
                try:
                    row = trial(ALL[name], 1000 + seed, Path(tmp))
                except Exception as exc:  # a failed trial counts as not meeting the tolerance
                    row = {"experiment": name, "seed": 1000 + seed, "ok": False,
                           "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for name in args.only:
        mine = [r for r in rows if r["experiment"] == name]
        good = [r for r in mine if "wall_s" in r]
        summary[name] = {
            "trials": len(mine), "met": sum(r["ok"] for r in mine),
            **{f"median_{k}": statistics.median(r[k] for r in good) if good else None
               for k in ("iterations", "wall_s", "frames")},
        }  # fmt: skip
        print(
            f"{name:18s} met {summary[name]['met']}/{len(mine)}  median "
            f"{summary[name]['median_iterations']} iterations, "
            f"{summary[name]['median_wall_s']} s, {summary[name]['median_frames']} frames"
        )
    met = sum(r["ok"] for r in rows)
    print(json.dumps({"benchmark": "closed_loop", "experiments": summary,
                      "baseline": "the done-when tolerance (fraction of trials meeting it)",
                      "trials": len(rows), "met": met,
                      "ratio": met / len(rows) if rows else 0.0}))  # fmt: skip


if __name__ == "__main__":
    main()
