"""The ``bluestem`` console command.

Each subcommand lives in its own public module of this package exposing
``add_parser(subparsers)``, which registers the subcommand and sets ``func`` (called with
the parsed arguments, returning the exit code); private modules (``_name``) hold helpers
shared by subcommands. Subcommand modules import their heavy dependencies inside
``func`` so that ``bluestem --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser with every subcommand registered."""
    from bluestem import __version__

    parser = argparse.ArgumentParser(
        prog="bluestem",
        description="Experiment orchestration for pixelated (4D) STEM.",
    )
    parser.add_argument("--version", action="version", version=f"bluestem {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Every public module of this package is a subcommand; discovering them keeps this
    # file untouched when a subcommand is added.  Private modules (_name) are helpers
    # shared by subcommands.
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``bluestem`` command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
