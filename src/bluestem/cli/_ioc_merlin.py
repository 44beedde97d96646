"""``bluestem ioc merlin``: the instrument IOC with its frames from a Merlin over TCP.

Registered by :mod:`bluestem.cli.ioc` (the leading underscore keeps the subcommand
discovery away). The PVs are those of ``bluestem ioc sim`` — the detector's ``cam1:`` and
``HDF1:``, and the microscope and scan generator of the twin (a facility points its
session's microscope and scan devices at its own IOCs) — so nothing in the devices or
plans changes with the backend.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

__all__ = ["COMMAND", "add_parser", "run"]

COMMAND = "bluestem ioc merlin"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed a TCP port 1..65535")
    return port


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed seconds, 0 < s <= 3600")
    return value


def add_parser(iocs) -> None:
    """Register ``bluestem ioc merlin`` under ``bluestem ioc``."""
    merlin = iocs.add_parser(
        "merlin",
        help="the instrument with a Quantum Detectors Merlin as its detector",
        description="Serve the PVs of 'bluestem ioc sim' with the frames from a Merlin "
        "(command and data ports over TCP; docs/merlin.md). The detector must answer at "
        "start (its sensor size sets DET:cam1:SizeX/SizeY); a detector lost later fails "
        "the acquisition it was in (STATUS FAULT, the file closed valid) and is "
        "reconnected at the next one. EPICS_CA_* environment variables are honoured.",
    )
    merlin.add_argument("--prefix", required=True, help="PV prefix, e.g. 'BST:'")
    merlin.add_argument("--host", required=True, help="the Merlin's host (e.g. 127.0.0.1)")
    merlin.add_argument("--command-port", type=_port, default=6341, help="default 6341")
    merlin.add_argument("--data-port", type=_port, default=6342, help="default 6342")
    merlin.add_argument("--binary", action="store_true",
                        help="ask for the binary format (default: raw, the detector's "
                        "fastest)")  # fmt: skip
    merlin.add_argument("--data-dir", default=None,
                        help="initial DET:HDF1:FilePath, created if missing")  # fmt: skip
    merlin.add_argument("--connect-timeout", type=_seconds, default=10.0,
                        help="seconds to wait for the detector at start (default 10)")  # fmt: skip
    merlin.add_argument("--stall", type=_seconds, default=10.0,
                        help="seconds without a frame, while the detector says it is busy, "
                        "that fail an acquisition (default 10)")  # fmt: skip
    merlin.add_argument("--interfaces", nargs="+", default=["127.0.0.1"],
                        help="interfaces to serve on (default: 127.0.0.1)")  # fmt: skip
    merlin.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Connect to the Merlin, then serve until SIGTERM or SIGINT (2: refused to start)."""
    from bluestem.cli import _ioc_serve
    from bluestem.ioc.instrument import Instrument, InstrumentConfig
    from bluestem.ioc.merlin.source import MerlinSource

    data_dir = os.path.abspath(args.data_dir or os.getcwd())
    try:
        _ioc_serve.prepare_data_dir(data_dir)
    except ValueError as exc:
        print(f"{COMMAND}: --data-dir {exc}; nothing served", file=sys.stderr)
        return 2
    source = MerlinSource(args.host, args.command_port, args.data_port, raw=not args.binary,
                          stall=args.stall)  # fmt: skip
    deadline = time.monotonic() + args.connect_timeout
    while True:
        try:
            sensor = source.connect()
            break
        except (OSError, ValueError) as exc:
            if time.monotonic() > deadline:
                print(f"{COMMAND}: no Merlin at {args.host} (command port "
                      f"{args.command_port}, data port {args.data_port}) within "
                      f"{args.connect_timeout:g} s: {exc}; nothing served",
                      file=sys.stderr)  # fmt: skip
                return 2
            time.sleep(0.2)
    print(f"{COMMAND}: Merlin {source.software_version} at {args.host}:{args.command_port}"
          f"/{args.data_port}, sensor {sensor[1]}x{sensor[0]}", flush=True)  # fmt: skip
    config = InstrumentConfig(data_dir=data_dir, sensor=sensor)
    ioc = Instrument(prefix=args.prefix, config=config, source=source)
    try:
        return _ioc_serve.serve_instrument(ioc, args.prefix, args.interfaces, data_dir, COMMAND)
    finally:
        source.close()
