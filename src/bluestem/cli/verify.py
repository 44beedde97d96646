"""``bluestem verify FILE ...``: check raw-frame files (checksums, received map, attrs)."""

from __future__ import annotations

import argparse

NAME = "verify"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``verify`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="verify raw-frame HDF5 files (fletcher32 of every chunk, received map)",
        description=(
            "Check every chunk's fletcher32 checksum and the received map. Exit 1 on a "
            "corrupt chunk or an unreadable or missing file; dropped frames are reported "
            "but are not an error unless --strict."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="raw-frame HDF5 file(s)")
    parser.add_argument("--strict", action="store_true", help="dropped frames are an error too")
    parser.add_argument("--json", action="store_true", help="print one JSON report per line")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Verify each file; return 1 if any failed (or, with --strict, dropped frames)."""
    from bluestem.frames import verify_file

    status = 0
    for path in args.files:
        report = verify_file(path)
        print(report.to_json() if args.json else report.summary())
        if not report.ok or (args.strict and report.dropped):
            status = 1
    return status
