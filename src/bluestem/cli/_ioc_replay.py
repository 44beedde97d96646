"""``bluestem ioc replay``: the instrument IOC with its frames replayed from a 4D file.

Registered by :mod:`bluestem.cli.ioc`. The PVs are those of ``bluestem ioc sim``; the
detector is the file's (its frame size, its counts' depth), so a session, its devices
and plans — and the live reduction and catalogue — run on stored data unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["COMMAND", "add_parser", "run"]

COMMAND = "bluestem ioc replay"


def add_parser(iocs) -> None:
    """Register ``bluestem ioc replay`` under ``bluestem ioc``."""
    replay = iocs.add_parser(
        "replay",
        help="the instrument with frames replayed from a 4D file",
        description="Serve the PVs of 'bluestem ioc sim' with the detector's frames read "
        "from FILE (bluestem's own, or the largest 3D/4D dataset of any HDF5 / EMD file) "
        "in storage order, paced at the scan's dwell (or as fast as the frame path "
        "allows with --max-rate). EPICS_CA_* environment variables are honoured.",
    )
    replay.add_argument("--prefix", required=True, help="PV prefix, e.g. 'BST:'")
    replay.add_argument("--file", required=True, help="the 4D file to replay")
    replay.add_argument("--data-dir", default=None,
                        help="initial DET:HDF1:FilePath, created if missing")  # fmt: skip
    replay.add_argument("--max-rate", action="store_true",
                        help="frames as fast as the frame path allows")  # fmt: skip
    replay.add_argument("--interfaces", nargs="+", default=["127.0.0.1"],
                        help="interfaces to serve on (default: 127.0.0.1)")  # fmt: skip
    replay.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Open the file, then serve until SIGTERM or SIGINT (2: refused to start)."""
    from bluestem.cli import _ioc_serve
    from bluestem.ioc.instrument import Instrument, InstrumentConfig
    from bluestem.ioc.replay_source import ReplaySource

    data_dir = os.path.abspath(args.data_dir or os.getcwd())
    try:
        _ioc_serve.prepare_data_dir(data_dir)
    except ValueError as exc:
        print(f"{COMMAND}: --data-dir {exc}; nothing served", file=sys.stderr)
        return 2
    try:
        source = ReplaySource(args.file)
    except ValueError as exc:
        print(f"{COMMAND}: {exc}; nothing served", file=sys.stderr)
        return 2
    ky, kx = source.sensor
    print(f"{COMMAND}: {source.total} frames of {kx}x{ky} ({source.frames.dtype}, counter "
          f"depth {source.depth}) from {source.frames.path} {source.frames.dataset}",
          flush=True)  # fmt: skip
    config = InstrumentConfig(data_dir=data_dir, sensor=source.sensor,
                              counter_depth=source.depth, max_rate=args.max_rate)  # fmt: skip
    ioc = Instrument(prefix=args.prefix, config=config, source=source)
    return _ioc_serve.serve_instrument(ioc, args.prefix, args.interfaces, data_dir, COMMAND)
