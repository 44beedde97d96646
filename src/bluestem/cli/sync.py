"""``bluestem sync``: upload journaled runs that the catalogue missed."""

from __future__ import annotations

import argparse
import os
import sys

NAME = "sync"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``sync`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="upload journaled runs that are not (fully) in the catalogue",
        description=(
            "Replay every unsynced run of the document journal into a Tiled catalogue: "
            "runs already complete there are only marked synced, partial copies are "
            "replaced, runs still being journaled are skipped. Exit 1 if any run failed, "
            "2 if the catalogue cannot be used at all (the journal is then untouched)."
        ),
    )
    parser.add_argument(
        "--journal",
        default=os.environ.get("BLUESTEM_JOURNAL_DIR") or "journal",
        metavar="DIR",
        help="journal directory (default: $BLUESTEM_JOURNAL_DIR or ./journal)",
    )
    parser.add_argument(
        "--catalog",
        default=os.environ.get("BLUESTEM_CATALOG_URI") or None,
        metavar="URI",
        help="Tiled server URI (default: $BLUESTEM_CATALOG_URI)",
    )
    parser.add_argument(
        "--api-key", default=None, help="catalogue API key (default: $BLUESTEM_API_KEY)"
    )
    parser.add_argument("--batch-size", type=int, default=100, help="events per write")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Connect, sync, print the summary; the exit code says whether all went well."""
    key = args.api_key or os.environ.get("BLUESTEM_API_KEY")
    if not args.catalog:
        print("error: no catalogue (--catalog or $BLUESTEM_CATALOG_URI)", file=sys.stderr)
        return 2
    if not key:
        print("error: an API key is required (--api-key or $BLUESTEM_API_KEY)", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    if not os.path.isdir(args.journal):
        print(f"error: journal directory {args.journal!r} does not exist", file=sys.stderr)
        return 2

    from bluestem.catalog.client import CatalogUnavailable, connect
    from bluestem.catalog.sync import sync_journal

    try:
        client = connect(args.catalog, key)
    except CatalogUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = sync_journal(args.journal, client, batch_size=args.batch_size)
    print(report.summary())
    return 1 if report.failed else 0
