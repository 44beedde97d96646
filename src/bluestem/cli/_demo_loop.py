"""``bluestem demo --loop``: the closed-loop experiments on the twin, end to end.

For each entry of :data:`EXPERIMENTS`, in order: a sim IOC (``bluestem ioc sim``) with a
**hidden state** only its truth file knows (``--column``, ``--specimen-param
thickness=…``, ``--truth``), a session on it (:func:`bluestem.session.build_session`,
the shared catalogue, the closed loops' progress lines and PNGs), the loop, its
iteration table as ``bluestem loop show`` prints it (read back from the catalogue), and
the truth beside the result. The demo exits 0 only when every loop converged.

An experiment is one :class:`Experiment`: a new closed-loop plan joins the demo as one
more entry of :data:`EXPERIMENTS`. (A private module: every public module of
``bluestem.cli`` is a subcommand; ``bluestem demo`` dispatches here.)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EXPERIMENTS", "Experiment", "add_arguments", "run_loop"]

NM = 1e-9
FRAME = 64  # detector pixels a side: the loops' tested settings


@dataclass(frozen=True)
class Experiment:
    """One closed-loop experiment of the demo.

    Attributes
    ----------
    name : str
        Short name (file names: ``truth-<name>.json``, ``raw/<name>``).
    hidden : callable
        ``hidden(rng) -> dict``: the hidden state, fixed when ``rng`` is None, else drawn
        from the ``random.Random`` given.
    ioc_args : callable
        ``ioc_args(hidden) -> list of str``: the ``bluestem ioc sim`` options that give
        the twin that state (the specimen too).
    prepare : callable
        ``prepare(session)``: detector and microscope settings before the loop.
    plan : callable
        ``plan(session, out) -> plan`` returning the :class:`bluestem.loop.LoopResult`.
    judge : callable
        ``judge(result, truth, session) -> list of str``: the truth (the IOC's truth file,
        parsed) beside the result.
    """

    name: str
    hidden: Callable[[random.Random | None], dict]
    ioc_args: Callable[[dict], list[str]]
    prepare: Callable[[Any], None]
    plan: Callable[[Any, Path], Any]
    judge: Callable[[Any, dict, Any], list[str]]


def _frame(session, *, convergence: float, camera_length: float | None = None,
           frame: int = FRAME) -> None:  # fmt: skip
    det, mic = session.det, session.mic
    settings = [(det.cam.bin_x, 1), (det.cam.bin_y, 1), (det.cam.size_x, frame),
                (det.cam.size_y, frame), (mic.convergence_angle, convergence)]  # fmt: skip
    if camera_length is not None:
        settings.append((mic.camera_length, camera_length))
    for setting, value in settings:
        setting.set(value).wait(30)


# -- autofocus: a residual C1 and A1 in the column ----------------------------------------
AUTOFOCUS_OFFSET = -300e-9  # m: the tested offset (docs/loop.md, "Autofocus")
AUTOFOCUS_TOLERANCE = 2e-9


def _nm(value: float) -> float:
    """``value`` nm in m, to 0.1 nm, as a float that prints as written (``1.2e-07``)."""
    return float(f"{value:.1f}e-9")


def _autofocus_hidden(rng: random.Random | None) -> dict:
    if rng is None:
        return {"C1": 120e-9, "A1": 30e-9, "A1_angle_deg": 40.0}
    return {"C1": _nm(rng.uniform(-200, 200)), "A1": _nm(rng.uniform(0, 50)),
            "A1_angle_deg": round(rng.uniform(-90, 90), 1)}  # fmt: skip


def _autofocus_ioc(h: dict) -> list[str]:
    column = f"C1={h['C1']!r},A1={h['A1']!r}@{h['A1_angle_deg']!r}deg"
    return ["--specimen", "nanoparticles", "--seed", "3", "--column", column]


def _autofocus_plan(session, out: Path):
    from bluestem.plans import autofocus

    return autofocus(session.det, session.scan, session.mic, shape=(48, 48), fov=24.0,
                     dwell=2e-4, c1_offset=AUTOFOCUS_OFFSET, tolerance=AUTOFOCUS_TOLERANCE,
                     md={"purpose": "bluestem demo --loop"})  # fmt: skip


def _autofocus_judge(result, truth: dict, session) -> list[str]:
    import cmath

    hidden = truth["hidden"]["column"]
    mic = session.mic
    defocus, astig, angle = (mic.defocus.get(), mic.astigmatism.get(),
                             mic.astigmatism_angle.get())  # fmt: skip
    # The probe's optics now: the final setpoints plus the hidden residual.
    c1 = defocus * NM + hidden["C1"]
    a1 = abs(astig * NM * cmath.exp(2j * math.radians(angle))
             + hidden["A1"] * cmath.exp(2j * hidden["A1_angle"]))  # fmt: skip
    report = result.report
    est = (f"C1 {report['c1_nm']:+.2f} ± {report['sigma_c1_nm']:.2f} nm, |A1| "
           f"{report['a1_nm']:.2f} ± {report['sigma_a1_nm']:.2f} nm" if "c1_nm" in report
           else "no fit")  # fmt: skip
    ok = abs(c1) <= AUTOFOCUS_TOLERANCE and a1 <= AUTOFOCUS_TOLERANCE
    return [
        f"  truth:    the column hides C1 {hidden['C1'] / NM:+.2f} nm, A1 "
        f"{hidden['A1'] / NM:.2f} nm @ {hidden['A1_angle_deg']:.1f} deg (no PV shows it)",
        f"  result:   set defocus {defocus:+.1f} nm, astigmatism {astig:.1f} nm @ "
        f"{angle:.1f} deg; last fit {est}",
        f"  error:    the probe now has C1 {c1 / NM:+.2f} nm, |A1| {a1 / NM:.2f} nm "
        f"({'within' if ok else 'OUTSIDE'} the {AUTOFOCUS_TOLERANCE / NM:g} nm tolerance)",
    ]


# -- PACBED: the specimen's thickness ------------------------------------------------------
def _pacbed_hidden(rng: random.Random | None) -> dict:
    return {"thickness": 20e-9 if rng is None else _nm(rng.uniform(8, 40))}


def _pacbed_ioc(h: dict) -> list[str]:
    return ["--specimen", "srtio3", "--seed", "11", "--specimen-param",
            f"thickness={h['thickness']!r}", "multislice=true"]  # fmt: skip


def _pacbed_plan(session, out: Path):
    from bluestem.plans import pacbed_thickness

    return pacbed_thickness(session.det, session.scan, session.mic,
                            cache_dir=str(out / "cache"),
                            md={"purpose": "bluestem demo --loop"})  # fmt: skip


def _pacbed_judge(result, truth: dict, session) -> list[str]:
    spec = truth["specimen"]
    given, rendered = spec["parameters"]["thickness"], spec.get("rendered_thickness")
    report = result.report
    lines = [f"  truth:    the specimen is {given / NM:.3f} nm thick"
             + (f" (rendered in whole slices: {rendered / NM:.3f} nm)" if rendered else "")
             + "; only the truth file says so"]  # fmt: skip
    if "thickness" in report:
        error = report["thickness"] - given
        lines += [f"  result:   {report['thickness'] / NM:.3f} ± {report['uncertainty'] / NM:.3f} "
                  f"nm (reduced chi2 {report['reduced_chi2']:.2f})",
                  f"  error:    {error / NM:+.3f} nm "
                  f"({'within' if abs(error) <= 1 * NM else 'OUTSIDE'} 1 nm)"]  # fmt: skip
    return lines


# -- adaptive survey: gold particles on a drifting specimen ---------------------------------
SURVEY_SPECIMEN = {"field": 40e-9, "particles": 6, "radius": (1.5e-9, 3.0e-9)}
SURVEY_FINE_FOV = 8.0  # nm: a fine scan is centred when within 10 % of it


def _survey_hidden(rng: random.Random | None) -> dict:
    if rng is None:
        return {"seed": 2, "drift": (0.25, -0.2)}
    return {
        "seed": rng.randrange(1000),
        "drift": (round(rng.uniform(-0.3, 0.3), 3), round(rng.uniform(-0.3, 0.3), 3)),
    }


def _survey_specimen(h: dict) -> dict:
    return {**SURVEY_SPECIMEN, "seed": h["seed"]}


def _survey_ioc(h: dict) -> list[str]:
    params = [f"{k}={','.join(map(repr, v)) if isinstance(v, tuple) else repr(v)}"
              for k, v in _survey_specimen(h).items()]  # fmt: skip
    # "--drift=…": a value starting "-0.1,…" would be read as an option
    return ["--specimen", "nanoparticles", "--specimen-param", *params,
            "--drift=" + ",".join(map(str, h["drift"]))]  # fmt: skip


def _survey_plan(session, out: Path):
    from bluestem.plans import adaptive_survey

    return adaptive_survey(session.det, session.scan, session.mic, fine_fov=SURVEY_FINE_FOV,
                           features=3, md={"purpose": "bluestem demo --loop"})  # fmt: skip


def survey_targets(spec: dict):
    """(y, x) in m of what a fine scan may be centred on: every particle of the survey's
    specimen (its truth-file parameters), and the mass-weighted centre of every aggregate
    of touching particles (the one feature an image shows where they touch)."""
    import numpy as np

    from bluestem.twin import make_specimen

    specimen = make_specimen("nanoparticles", **{
        k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})  # fmt: skip
    return np.concatenate([specimen.layout[0], specimen.aggregates()[0]])


def _survey_judge(result, truth: dict, session) -> list[str]:
    import numpy as np

    spec = truth["specimen"]["parameters"]
    field = float(spec["field"])
    particles = survey_targets(spec)
    # This IOC took only this loop's rasters: its acquisitions are the loop's, in order
    # (survey, then per feature a track, a fine scan and maybe that scan re-centred: the
    # agent's "scans"); each feature's last fine scan is judged.
    entries = [truth["acquisitions"][k] for k in sorted(truth["acquisitions"], key=int)]
    scans = list(result.report.get("scans", []))
    last = [i for i, role in enumerate(scans) if role.startswith("fine")
            and (i + 1 == len(scans) or scans[i + 1] != "fine again")]  # fmt: skip
    drift0 = np.asarray(entries[0]["displacement"]["drift"])
    lines, worst = [], 0.0
    for k, i in enumerate(last, 1):
        entry = entries[i]
        centre = np.asarray(entry["displacement"]["scan_centre"])
        off = (particles - centre + field / 2) % field - field / 2
        miss = float(np.hypot(off[:, 0], off[:, 1]).min())
        drift = float(np.hypot(*(np.asarray(entry["displacement"]["drift"]) - drift0)))
        worst = max(worst, miss)
        again = ", re-centred once" if scans[i] == "fine again" else ""
        lines.append(f"  fine {k}:   centred {miss / NM:.2f} nm from its particle (the specimen "
                     f"drifted {drift / NM:.2f} nm since the survey{again})")  # fmt: skip
    limit = 0.1 * SURVEY_FINE_FOV * NM
    v = truth["hidden"]["drift"]
    return [f"  truth:    {len(particles)} particles and aggregates; the specimen drifts "
            f"({v[0] / NM:+.2f}, "
            f"{v[1] / NM:+.2f}) nm/s (no PV shows it)", *lines,
            f"  error:    worst {worst / NM:.2f} nm ({'within' if worst <= limit else 'OUTSIDE'}"
            f" 10 % of the {SURVEY_FINE_FOV:g} nm field)"]  # fmt: skip


#: The demo's experiments, in the order they run.
EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("autofocus", _autofocus_hidden, _autofocus_ioc,
               lambda s: _frame(s, convergence=10.0), _autofocus_plan, _autofocus_judge),
    Experiment("pacbed", _pacbed_hidden, _pacbed_ioc,
               lambda s: _frame(s, convergence=10.0, camera_length=60.0), _pacbed_plan,
               _pacbed_judge),
    Experiment("survey", _survey_hidden, _survey_ioc,
               lambda s: _frame(s, convergence=10.0, camera_length=35.0, frame=32),
               _survey_plan, _survey_judge),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bluestem demo --loop`` (on the ``demo`` parser)."""
    group = parser.add_argument_group("closed loops (--loop)")
    group.add_argument(
        "--loop", action="store_true",
        help="run the closed-loop experiments (" + ", ".join(e.name for e in EXPERIMENTS)
             + ") on twins with hidden states instead of the raster, print each loop's "
               "iteration table and the truth, write the loops' PNGs under OUT/png; "
               "--shape, --frame, --specimen, --fov and --dwell do not apply",
    )  # fmt: skip
    group.add_argument(
        "--hidden-seed", type=int, default=None, metavar="N",
        help="draw the hidden states from seed N (C1 within +-200 nm, |A1| <= 50 nm, "
             "thickness 8..40 nm, drift within +-0.3 nm/s); default: fixed (C1 +120 nm, A1 "
             "30 nm @ 40 deg; 20 nm; 0.25, -0.2 nm/s)",
    )  # fmt: skip


def run_loop(args: argparse.Namespace) -> int:
    """Run every experiment; 0 when every loop converged."""
    from bluestem.procs import free_port

    out = Path(args.out).resolve()
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = None if args.hidden_seed is None else random.Random(args.hidden_seed)
    started: list[tuple[str, Any]] = []
    outcomes: dict[str, bool] = {}
    try:
        uri, key = args.catalog, args.api_key
        if not uri:
            from bluestem.catalog import start_server

            print(f"starting the catalogue (log: {out / 'catalog' / 'server.log'}) ...",
                  flush=True)  # fmt: skip
            key = secrets.token_hex(16)
            server = start_server(out / "catalog", api_key=key, raw_dirs=[raw], timeout=120)
            started.append(("catalogue", server))
            uri = server.uri
        repeater = free_port()  # one CA client in this process: one repeater port for all
        for exp in EXPERIMENTS:
            try:
                outcomes[exp.name] = _one(exp, args, rng, out, raw, uri, key, started, repeater)
            except Exception as exc:
                print(f"\n{exp.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                outcomes[exp.name] = False
    except Exception as exc:
        print(f"\ndemo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        for what, proc in reversed(started):
            code = proc.stop()
            print(f"{what} (pid {proc.pid}) stopped, exit code {code}", flush=True)
    good = [n for n, ok in outcomes.items() if ok]
    ok = len(good) == len(EXPERIMENTS)
    each = ", ".join(f"{n} {'yes' if v else 'NO'}" for n, v in outcomes.items())
    print(f"demo --loop {'OK' if ok else 'FAILED'}: {len(good)} of {len(EXPERIMENTS)} "
          f"loop(s) converged ({each})", flush=True)  # fmt: skip
    return 0 if ok else 1


def _one(exp: Experiment, args, rng, out: Path, raw: Path, uri: str, key: str,
         started: list, repeater: int) -> bool:  # fmt: skip
    """One experiment: its IOC, its session, the loop, the table and the truth."""
    from bluestem.procs import ca_environment, start_ioc
    from bluestem.session import build_session

    hidden = exp.hidden(rng)
    truth_path = out / f"truth-{exp.name}.json"
    data = raw / exp.name
    ioc_args = ["--data-dir", str(data), *exp.ioc_args(hidden), "--truth", str(truth_path)]
    if not args.paced:
        ioc_args.append("--max-rate")
    print(f"\n== {exp.name}: starting its sim IOC (log: {out / f'ioc-{exp.name}.log'}) ...",
          flush=True)  # fmt: skip
    ioc = start_ioc(args=ioc_args, env=ca_environment(repeater_port=repeater),
                    log_path=out / f"ioc-{exp.name}.log", timeout=120)  # fmt: skip
    started.append((f"{exp.name} IOC", ioc))
    iocs = [p for what, p in started if what.endswith(" IOC")]
    session = build_session(_inventory(ioc, iocs, uri, key, out, data, exp.name))
    try:
        exp.prepare(session)
        t0 = time.monotonic()
        kept: list = []

        def keep(plan):
            kept.append((yield from plan))

        session.RE(keep(exp.plan(session, out)))
        seconds = time.monotonic() - t0
        (result,) = kept
        synced = session.writer.flush(120)
        print(f"\n{exp.name}: {result.reason} in {seconds:.1f} s; loop {result.uid}")
        print("\n".join(_table(result.uid, uri, key, out / "journal", synced)))
        truth = json.loads(truth_path.read_text())
        print("\n".join(exp.judge(result, truth, session)))
        pngs = sorted({p for p in session.loop_view.saved if p.name.startswith(
            f"loop-{result.uid[:8]}")}) if session.loop_view else []  # fmt: skip
        for png in pngs:
            print(f"  figure:   {png}")
        print(f"  replay:   bluestem loop show {result.uid[:8]} --catalog {uri}", flush=True)
        return bool(result.converged)
    finally:
        advice = session.close()
        if advice:
            print(advice, file=sys.stderr)


def _inventory(ioc, iocs: list, uri: str, key: str, out: Path, data: Path, name: str) -> dict:
    """The session of one experiment: the three devices of ``ioc``, the shared catalogue
    and journal, progress lines, and the loops' PNGs (with the live images) in OUT/png."""
    env = ioc.env
    return {
        "devices": [{"class": f"bluestem.devices.{cls}", "prefix": ioc.prefix + group,
                     "name": device}
                    for cls, group, device in (("Microscope", "MIC:", "mic"),
                                               ("ScanGenerator", "SCAN:", "scan"),
                                               ("PixelatedDetector", "DET:", "det"))],
        "data_root": str(data),
        "journal_dir": str(out / "journal"),
        "catalog": {"uri": uri, "api_key": key},
        "metadata": {"sample": name, "operator": "bluestem demo --loop"},
        "ca": {
            # Every IOC so far stays reachable: caproto reads the list at each search.
            "addr_list": " ".join(f"127.0.0.1:{p.env['EPICS_CA_SERVER_PORT']}" for p in iocs),
            "auto_addr_list": env["EPICS_CA_AUTO_ADDR_LIST"],
            "server_port": env["EPICS_CA_SERVER_PORT"],
            "repeater_port": env["EPICS_CA_REPEATER_PORT"],
        },
        "baseline": ["mic"],
        "namespace": ["bluestem.plans"],
        "connect_timeout": 30,
        "live": {"images": True, "out_dir": str(out / "png")},
    }  # fmt: skip


def _table(uid: str, uri: str, key: str, journal: Path, synced: bool) -> list[str]:
    """``bluestem loop show``'s lines, from the catalogue (the journal if need be)."""
    from bluestem.cli.loop import format_loop
    from bluestem.loop import read_loop

    try:
        if not synced:
            raise LookupError("the catalogue did not confirm every document in time")
        from tiled.client import from_uri

        docs = from_uri(uri, api_key=key)[uid].documents()
        where = "from the catalogue"
    except Exception as exc:
        from bluestem.journal import find_runs

        (run,) = [r for r in find_runs(journal) if r.uid == uid]
        docs, where = run.documents(), f"from the journal ({type(exc).__name__}: {exc})"
    return [f"  (iteration table {where})", *format_loop(read_loop(docs))]
