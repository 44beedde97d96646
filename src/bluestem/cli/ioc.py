"""``bluestem ioc sim``: the simulated 4D-STEM instrument as a caproto soft IOC."""

from __future__ import annotations

import argparse
import os

__all__ = ["add_parser", "run"]

SWITCH_INTERVAL = 5e-4  # s
COMMAND = "bluestem ioc sim"


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
    sim.set_defaults(func=run)


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
    )
    ioc = Instrument(prefix=args.prefix, config=config)
    if args.list_pvs:
        print("\n".join(list_pvs(ioc)))
        return 0

    # Two servers of one prefix on one network both answer, and a client silently gets
    # whichever replies first: refuse to be the second.
    probe = ioc.status.pvname
    try:
        other = _ioc_serve.find_server(probe)
    except OSError as exc:
        # An unreachable address in EPICS_CA_ADDR_LIST must not keep the IOC down.
        print(f"{COMMAND}: warning: duplicate-prefix search failed: {exc}", file=sys.stderr)
        other = None
    if other is not None:
        print(
            f"{COMMAND}: prefix {args.prefix!r} is already served by {other[0]}:{other[1]} "
            f"(it answered a search for {probe}); nothing served. Stop that IOC or choose "
            "another --prefix.",
            file=sys.stderr,
        )
        return 2

    # The frame path runs in threads that hold the GIL in short bursts (h5py, numpy); a
    # short switch interval lets the asyncio thread answer puts within a few ms while
    # they run (the default 5 ms interval, paid several times per put, gave ~20 ms).
    sys.setswitchinterval(SWITCH_INTERVAL)

    def banner(interfaces: list[str], ca_port: int, tcp_port: int) -> str:
        return (
            f"{COMMAND}: serving {len(ioc.pvdb)} PVs with prefix {args.prefix} on "
            f"{', '.join(interfaces)} (CA server port {ca_port}, TCP port {tcp_port}); "
            f"data directory {data_dir}; ready"
        )

    return _ioc_serve.serve(
        ioc.pvdb,
        name=COMMAND,
        interfaces=args.interfaces,
        banner=banner,
        shutdown=ioc.shutdown,
    )
