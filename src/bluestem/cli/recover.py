"""``bluestem recover FILE ...``: make raw-frame files whose writer died consistent.

The same as ``bluestem verify --repair``, named for the operator after a crash or a power
cut: for each file whose writer never closed it, the superblock is rewritten (status
flags cleared, end-of-file address set to the file's length) so that every reader opens
it without SWMR, the file is made read-only, and it is verified; no frame byte and no
entry of the ``received`` map changes (the map on disk never claims a frame the file
does not hold: the writer syncs the frames before the map). Each file's line says what
was done. See docs/data-layout.md, "A file whose writer died".
"""

from __future__ import annotations

import argparse

__all__ = ["NAME", "add_parser", "run"]

NAME = "recover"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``recover`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="make raw-frame files whose writer died (crash, power cut) readable, and "
        "verify them (= verify --repair)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="raw-frame HDF5 file(s)")
    parser.add_argument("--json", action="store_true", help="print one JSON report per line")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Repair and verify each file; 1 if any was refused or does not verify."""
    from bluestem.cli import verify

    return verify.run(argparse.Namespace(files=args.files, json=args.json, repair=True,
                                         strict=False))  # fmt: skip
