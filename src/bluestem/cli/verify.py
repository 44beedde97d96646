"""``bluestem verify FILE ...``: check raw-frame files (checksums, received map, attrs).

``--repair`` first makes a file whose writer died readable without SWMR (its superblock
only); see docs/data-layout.md, "A file whose writer died".
"""

from __future__ import annotations

import argparse
import json

__all__ = ["NAME", "add_parser", "run"]

NAME = "verify"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``verify`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="verify raw-frame HDF5 files (fletcher32 of every chunk, received map)",
        description=(
            "Check every chunk's fletcher32 checksum and the received map. Exit 1 on a "
            "corrupt chunk or an unreadable or missing file; dropped frames, and a file "
            "its writer never closed (killed or still running), are reported but are not "
            "an error unless --strict."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="raw-frame HDF5 file(s)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="dropped frames and a file its writer never closed are an error too",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON report per line")
    parser.add_argument(
        "--repair",
        action="store_true",
        help=(
            "before verifying, rewrite the superblock of a file whose SWMR writer died "
            "(status flags cleared, end-of-file address set to the file's length, as "
            "'h5clear -s --increment=0') so that readers without SWMR can open it; no "
            "frame byte changes; refused while a process has the file open for writing "
            "or when the file is truncated (exit 1)"
        ),
    )
    parser.set_defaults(func=run)
    return parser


def _repair(path) -> tuple[bool, dict, str]:
    # (succeeded, JSON-ready outcome, text); a refusal is reported, never raised.
    from bluestem.frames import RepairError, repair_file

    try:
        result = repair_file(path)
    except (RepairError, ValueError, OSError) as exc:
        return (
            False,
            {"path": str(path), "repaired": False, "refused": str(exc)},
            (f"not repaired: {exc}"),
        )
    return True, result.as_dict(), result.summary()


def run(args: argparse.Namespace) -> int:
    """Verify each file (repairing it first with --repair); return 1 if any failed (or,
    with --strict, has dropped frames or was never closed)."""
    from bluestem.frames import verify_file

    status = 0
    for path in args.files:
        repair = None
        if args.repair:
            repaired, repair, text = _repair(path)
            status |= not repaired
            if not args.json:
                print(text)
        report = verify_file(path)
        if args.json:
            extra = {} if repair is None else {"repair": repair}
            print(json.dumps(json.loads(report.to_json()) | extra))
        else:
            print(report.summary())
        if not report.ok or (args.strict and (report.dropped or not report.closed)):
            status = 1
    return int(status)
