"""``bluestem merlin-sim``: a Merlin detector (both TCP sockets) for CI and for users
without the hardware (docs/merlin.md)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def _scan(text: str) -> tuple[int, int]:
    ny, sep, nx = text.lower().partition("x")
    try:
        shape = (int(ny), int(nx))
    except ValueError:
        shape = (0, 0)
    if not sep or not (1 <= shape[0] <= 1024 and 1 <= shape[1] <= 1024):
        raise argparse.ArgumentTypeError(f"--scan {text!r}: allowed NYxNX, 1..1024 each")
    return shape


def _port_base(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if port != 0 and not 1024 <= port <= 65534:
        raise argparse.ArgumentTypeError(
            f"--port-base {text!r}: allowed 0 (free ports) or 1024..65534"
        )
    return port


def add_parser(subparsers) -> None:
    """Register ``bluestem merlin-sim``."""
    parser = subparsers.add_parser(
        "merlin-sim",
        help="simulate a Quantum Detectors Merlin on its command and data ports",
        description="Listen on the command port (PORT_BASE) and the data port "
        "(PORT_BASE + 1) and answer as a MerlinEM does: the command set, the acquisition "
        "header and MQ1 frames in any counter depth, binary or raw, single chip or quad, "
        "internal or soft trigger; faults on request. Stop with SIGINT or SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port-base", type=_port_base, default=6341,
                        help="command port; data port = this + 1 (default 6341; 0: free "
                        "ports, printed and written to --ports-file)")  # fmt: skip
    parser.add_argument("--chips", type=int, choices=(1, 4), default=1,
                        help="1 (256 x 256) or 4 (a quad, 512 x 512)")  # fmt: skip
    parser.add_argument("--frames-from", default="twin",
                        help="'twin' (default) or a 4D HDF5 / EMD file whose frames are "
                        "sent in order, centred on the detector")  # fmt: skip
    parser.add_argument("--specimen", default="srtio3", help="the twin's specimen")
    parser.add_argument("--scan", type=_scan, default=(16, 16),
                        help="the twin's raster NYxNX (frames go round it; 16x16)")  # fmt: skip
    parser.add_argument("--dose", type=float, default=2000.0,
                        help="the twin's electrons per frame (default 2000)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="the twin's noise seed")
    parser.add_argument("--faults", default="",
                        help="e.g. 'drop=5,17;stall=40:0.5;disconnect=100@1;truncate=60;"
                        "corrupt=30;badlength=30' (docs/merlin.md)")  # fmt: skip
    parser.add_argument("--ports-file", default=None,
                        help="write {\"command\": P, \"data\": Q, \"pid\": N} here once "
                        "listening")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bluestem.ioc.merlin import pixels
    from bluestem.ioc.merlin.sim_frames import provider_for
    from bluestem.ioc.merlin.simulator import MerlinSimulator

    if not (0 < args.dose <= 1e9):
        print(f"bluestem merlin-sim: --dose {args.dose}: allowed 0 < dose <= 1e9",
              file=sys.stderr)  # fmt: skip
        return 2
    base = args.port_base
    try:
        frames = provider_for(args.frames_from, pixels.frame_shape(args.chips),
                              **({"specimen": args.specimen, "scan": args.scan,
                                  "dose": args.dose, "seed": args.seed}
                                 if args.frames_from == "twin" else {}))  # fmt: skip
        sim = MerlinSimulator(frames.frames, host=args.host, command_port=base,
                              data_port=base + 1 if base else 0, chips=args.chips,
                              faults=args.faults, log=_log)  # fmt: skip
    except (ValueError, OSError) as exc:
        print(f"bluestem merlin-sim: {exc}", file=sys.stderr)
        return 2
    command, data = sim.ports
    signal.signal(signal.SIGTERM, lambda *_: sim.close())
    signal.signal(signal.SIGINT, lambda *_: sim.close())
    sim.start()
    _log(f"listening: command {args.host}:{command}, data {args.host}:{data} "
         f"({args.chips} chip(s), frames from {args.frames_from})")  # fmt: skip
    if args.ports_file:
        path = Path(args.ports_file)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"command": command, "data": data, "pid": os.getpid()}))
        tmp.replace(path)  # whole or absent: a reader never sees half of it
    while not sim.wait(0.5):  # wake for signals
        pass
    sim.close()
    _log("stopped")
    return 0


def _log(text: str) -> None:
    print(f"merlin-sim: {text}", flush=True)
