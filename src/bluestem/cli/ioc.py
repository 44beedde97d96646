"""``bluestem ioc sim``: the simulated 4D-STEM instrument as a caproto soft IOC."""

from __future__ import annotations

import argparse
import os

__all__ = ["add_parser", "run"]

COMMAND = "bluestem ioc sim"


def _sync_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed a number of seconds in 0..3600")
    return value


def add_parser(subparsers) -> None:
    """Register ``bluestem ioc``."""
    parser = subparsers.add_parser("ioc", help="run a soft IOC")
    iocs = parser.add_subparsers(dest="ioc", metavar="IOC", required=True)
    sim = iocs.add_parser(
        "sim",
        help="the simulated instrument (microscope, scan generator, pixelated detector)",
        description="Serve PFX:MIC:, PFX:SCAN:, PFX:DET:cam1:, PFX:DET:HDF1: and PFX:STATUS "
        "backed by the physics twin. EPICS_CA_* environment variables are honoured.",
    )
    sim.add_argument("--prefix", required=True, help="PV prefix, e.g. 'BST:'")
    sim.add_argument(
        "--data-dir",
        default=None,
        help="initial DET:HDF1:FilePath, created if missing (default: current directory)",
    )
    sim.add_argument("--specimen", default="srtio3", help="twin specimen (default: srtio3)")
    sim.add_argument(
        "--specimen-param",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter of the specimen, SI units, repeatable or several at once: e.g. "
        "'--specimen-param thickness=20e-9 multislice=true' (keys: the specimen's "
        "parameters, docs/twin.md; srtio3: thickness 1e-10..1e-6 m, multislice true/false, "
        "slices_per_cell 1 or 2, tilt TY,TX rad, lattice, atom_width). The thickness is "
        "hidden state: the file records the other parameters, and that a parameter was "
        "hidden (hidden_specimen_parameters), never its value (see --truth)",
    )
    sim.add_argument("--list-pvs", action="store_true", help="print every PV and exit")
    sim.add_argument(
        "--max-rate",
        action="store_true",
        help="produce frames as fast as the frame path allows (dwell still sets the dose)",
    )
    sim.add_argument(
        "--interfaces",
        nargs="+",
        default=["127.0.0.1"],
        help="interfaces to serve on (default: 127.0.0.1)",
    )
    sim.add_argument(
        "--faults",
        default="",
        help="detector faults, FaultSchedule syntax e.g. 'drop=5,17;late=40:0.2'",
    )
    sim.add_argument(
        "--stuck",
        default="",
        help="comma-separated MIC settings whose readback does not follow the setpoint",
    )
    sim.add_argument("--seed", type=int, default=0, help="twin random seed (default: 0)")
    sim.add_argument(
        "--sync-interval",
        type=_sync_interval,
        default=None,
        metavar="S",
        help="fsync each file at most every S s, the frames before the received map that "
        "claims them (0: every row), so a power cut loses at most S s and the map never "
        "claims a frame the disk lacks; costs throughput (docs/benchmarks.md); default off",
    )
    hidden = sim.add_argument_group(
        "hidden state",
        "What a real column has and no PV shows: the PVs, their readbacks and the file's "
        "metadata describe only what the PVs say; the truth goes to stderr and --truth.",
    )
    hidden.add_argument(
        "--column",
        default="",
        metavar="SPEC",
        help="residual aberrations, SI units, added to the PV setpoints: "
        "'C1=85e-9,A1=20e-9@30deg,C3=1.2e-3' (C1 in m, |C1| <= 1e-5, adds to MIC:Defocus; "
        "A1 in m, 0..1e-5, azimuth in deg, -180..180, adds as a complex A1 e^{2i phi} to "
        "MIC:Astigmatism/AstigmatismAngle; C3 in m, |C3| <= 1e-2, adds to MIC:Cs_RBV)",
    )
    hidden.add_argument(
        "--drift",
        default="",
        metavar="VY,VX",
        help="specimen drift in nm/s since the IOC started ('VY,VX', or one number along "
        "x; each |v| <= 1000; write --drift=-0.5,1 for a leading minus), applied as a "
        "displacement at each acquisition's start",
    )
    hidden.add_argument(
        "--tilt",
        default="",
        metavar="DEG",
        help="specimen plane sloped along x by DEG (-80..80): its height x tan(DEG) at the "
        "scan centre adds to MIC:StageZ and lowers C1 (a higher specimen is underfocus)",
    )
    hidden.add_argument(
        "--truth",
        default="",
        metavar="FILE",
        help="private JSON file of the true state (residuals; per acquisition the "
        "effective optics, displacements and exact twin parameters), rewritten atomically "
        "at each acquisition's start; for tests and benchmarks only, never a PV",
    )
    sim.set_defaults(func=run)
    from bluestem.cli import _ioc_merlin, _ioc_replay

    _ioc_merlin.add_parser(iocs)
    _ioc_replay.add_parser(iocs)


def list_pvs(group) -> list[str]:
    """One line per PV: name, type, access, units and doc."""
    from caproto import AccessRights

    lines = []
    for name, pv in group.pvdb.items():
        access = "RW" if AccessRights.WRITE in pv.check_access("localhost", "") else "RO"
        dtype = pv.data_type.name
        if dtype == "CHAR":
            dtype = f"CHAR[{pv.max_length}] (string)"
        if dtype == "ENUM":
            dtype = f"ENUM({'/'.join(pv.enum_strings)})"
        units = getattr(pv, "units", "") or ""
        doc = " ".join((pv.__doc__ or "").split())
        lines.append(f"{name}\t{dtype}\t{access}\t{units}\t{doc}")
    return lines


def hidden_state(args: argparse.Namespace):
    """The :class:`bluestem.ioc.hidden.HiddenState` of ``--column``, ``--drift``,
    ``--tilt`` (ValueError naming the bad value and the allowed form and range)."""
    from bluestem.ioc.hidden import Column, HiddenState, parse_column, parse_drift, parse_tilt

    return HiddenState(
        column=parse_column(args.column) if args.column else Column(),
        drift=parse_drift(args.drift) if args.drift else (0.0, 0.0),
        tilt=parse_tilt(args.tilt) if args.tilt else 0.0,
    )


def announce_hidden(hidden, truth: str, source=None) -> None:
    """The true state to stderr (and the acquisitions' log at INFO), and the first truth
    file written (OSError when it cannot be); ``source`` a TwinSource with specimen
    parameters (its truth file, which records them)."""
    import logging
    import sys

    from bluestem.ioc.hidden import LOG, TruthFile

    if source is not None and truth:
        source.write_truth()
    elif truth:
        TruthFile(truth, hidden).write()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{COMMAND}: truth: %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    state = hidden.describe() if hidden.active else "no hidden state"
    if source is not None and source.specimen_parameters:
        state += f"; specimen {source.specimen} {source.specimen_parameters}"
        if source.hidden_specimen:
            state += f" (hidden: {', '.join(source.hidden_specimen)})"
    LOG.info("%s; truth file %s", state, truth or "none")


def run(args: argparse.Namespace) -> int:
    """Run the IOC until SIGTERM or SIGINT; returns the exit code (2: refused to start)."""
    import sys

    from bluestem.cli import _ioc_serve
    from bluestem.ioc.instrument import Instrument, InstrumentConfig
    from bluestem.ioc.microscope import Microscope

    stuck = frozenset(s.strip() for s in args.stuck.split(",") if s.strip())
    settings = {pv.pvspec.name for pv in Microscope._pvs_.values() if not pv.pvspec.read_only}
    unknown = stuck - settings
    if unknown:
        print(f"--stuck: unknown setting(s) {sorted(unknown)} (allowed: {sorted(settings)})")
        return 2
    if args.faults:
        from bluestem.twin import FaultSchedule

        try:
            FaultSchedule.parse(args.faults)
        except ValueError as exc:
            print(f"--faults: {exc}")
            return 2
    if args.specimen:
        from bluestem.twin import SPECIMENS

        if args.specimen not in SPECIMENS:
            print(f"--specimen: {args.specimen!r} unknown (allowed: {sorted(SPECIMENS)})")
            return 2
    specimen_params: dict = {}
    if args.specimen_param:
        from bluestem.ioc.backend import parse_specimen_parameters

        try:
            specimen_params = parse_specimen_parameters(args.specimen, args.specimen_param)
        except ValueError as exc:
            print(f"{COMMAND}: {exc}; nothing served", file=sys.stderr)
            return 2
    try:
        hidden = hidden_state(args)
    except ValueError as exc:
        print(f"{COMMAND}: {exc}; nothing served", file=sys.stderr)
        return 2
    data_dir = os.path.abspath(args.data_dir or os.getcwd())
    if not args.list_pvs:
        try:
            _ioc_serve.prepare_data_dir(data_dir)
        except ValueError as exc:
            if args.data_dir is not None:
                print(f"{COMMAND}: --data-dir {exc}; nothing served", file=sys.stderr)
                return 2
            # The default (where the IOC was started) is only a starting FilePath.
            print(f"{COMMAND}: warning: data directory {exc}", file=sys.stderr)
    config = InstrumentConfig(
        data_dir=data_dir,
        specimen=args.specimen,
        faults=args.faults,
        stuck=stuck,
        seed=args.seed,
        max_rate=args.max_rate,
        sync_interval=args.sync_interval,
        hidden=hidden,
        truth=os.path.abspath(args.truth) if args.truth else "",
    )
    source = None
    if specimen_params:
        from bluestem.ioc.twin_source import TwinSource

        source = TwinSource(
            config.specimen,
            specimen_parameters=specimen_params,
            seed=config.seed,
            faults=config.faults,
            max_rate=config.max_rate,
            hidden=config.hidden,
            truth=config.truth,
        )
    ioc = Instrument(prefix=args.prefix, config=config, source=source)
    if args.list_pvs:
        print("\n".join(list_pvs(ioc)))
        return 0
    if hidden.active or config.truth or specimen_params:
        try:
            announce_hidden(hidden, config.truth, source)
        except OSError as exc:
            print(f"{COMMAND}: --truth {config.truth}: cannot be written ({exc.strerror or exc})"
                  "; nothing served", file=sys.stderr)  # fmt: skip
            return 2

    return _ioc_serve.serve_instrument(ioc, args.prefix, args.interfaces, data_dir, COMMAND)
