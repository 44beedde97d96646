"""``bluestem shell``: IPython with the bluestem profile (one session from an inventory)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_parser", "default_profile_dir", "run"]


def default_profile_dir() -> Path:
    """``profiles/profile_bluestem`` of the source tree (or ``$BLUESTEM_PROFILE_DIR``)."""
    if os.environ.get("BLUESTEM_PROFILE_DIR"):
        return Path(os.environ["BLUESTEM_PROFILE_DIR"])
    return Path(__file__).resolve().parents[3] / "profiles" / "profile_bluestem"


def add_parser(subparsers) -> None:
    """Register ``bluestem shell``."""
    parser = subparsers.add_parser(
        "shell", help="IPython with a bluestem session (RE, devices, plans) ready"
    )
    parser.add_argument(
        "--config", metavar="FILE",
        help="session inventory YAML (default: $BLUESTEM_CONFIG, else profiles/sim.yml)",
    )  # fmt: skip
    parser.add_argument(
        "--profile-dir", metavar="DIR",
        help="IPython profile directory (default: profiles/profile_bluestem)",
    )  # fmt: skip
    parser.add_argument("ipython_args", nargs=argparse.REMAINDER,
                        help="further IPython arguments (after --)")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start IPython; its exit status."""
    profile = Path(args.profile_dir) if args.profile_dir else default_profile_dir()
    if not (profile / "startup").is_dir():
        print(f"--profile-dir {profile}: no startup/ folder there; allowed an IPython "
              "profile directory such as profiles/profile_bluestem", file=sys.stderr)  # fmt: skip
        return 2
    if args.config:
        config = Path(args.config).resolve()
        if not config.is_file():
            print(f"--config {args.config}: no such file", file=sys.stderr)
            return 2
        os.environ["BLUESTEM_CONFIG"] = str(config)
    try:
        import IPython
    except ImportError:
        print("bluestem shell needs IPython: pip install ipython", file=sys.stderr)
        return 1
    from bluestem.session.interactive import session_namespace

    # The session first: a shell without RE is no use, so a session that cannot be built
    # ends here, with its error and a non-zero status.
    try:
        namespace = session_namespace(os.environ.get("BLUESTEM_CONFIG") or None)
    except Exception as exc:
        print(f"bluestem shell: no session, not starting IPython: {type(exc).__name__}: "
              f"{exc}", file=sys.stderr)  # fmt: skip
        return 1
    extra = [a for a in args.ipython_args if a != "--"]
    try:
        IPython.start_ipython(argv=["--profile-dir", str(profile), *extra], user_ns=namespace)
    finally:
        # Before the interpreter exits: the catalogue writer gets its bounded wait here.
        namespace["session"].close_at_exit()
    return 0
