"""``bluestem loop show UID``: a closed loop's iterations, read back from the catalogue.

The umbrella run's documents (from Tiled, or a document journal with ``--journal``) are
decoded by :func:`bluestem.loop.read_loop`: the same decoding a replay of the decisions
uses, so what is printed is what an audit rebuilds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bluestem.cli._runs import _catalog_uids, _unique

NAME = "loop"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``loop`` subcommand (``loop show``)."""
    parser = subparsers.add_parser(
        NAME,
        help="closed-loop experiments: show a loop's iterations from the catalogue",
        description="Closed loops (bluestem.plans.closed_loop) as the catalogue holds them.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="print a loop's iteration table",
        description=(
            "Print the iteration table of a closed loop's umbrella run: what the agent "
            "requested, the settings as read back, the measurement, the loop's decision "
            "and the acquisition runs; then its end (status, reason, failure, restore)."
        ),
    )
    show.add_argument("uid", help="the umbrella run's uid (the loop's uid) or a prefix of it")
    show.add_argument(
        "--catalog",
        default=os.environ.get("BLUESTEM_CATALOG_URI"),
        metavar="URI",
        help="Tiled server URI (default: $BLUESTEM_CATALOG_URI)",
    )
    show.add_argument("--api-key", default=None, help="default: $BLUESTEM_API_KEY")
    show.add_argument(
        "--journal", metavar="DIR", help="read the run from this document journal instead"
    )
    show.add_argument("--json", action="store_true", help="one JSON object per iteration")
    show.set_defaults(func=run)
    parser.set_defaults(func=lambda args: _usage(parser))
    return parser


def _usage(parser) -> int:
    parser.print_help()
    return 2


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _documents(args) -> list:
    if not args.uid:
        raise LookupError("the uid is empty; give the loop's uid or a prefix of it")
    if args.journal:
        from bluestem.journal import find_runs

        runs = {r.uid: r for r in find_runs(args.journal)}
        return list(runs[_unique(args.uid, runs, f"the journal {args.journal}")].documents())
    if not args.catalog:
        raise LookupError("no catalogue (--catalog or $BLUESTEM_CATALOG_URI) and no "
                          "journal (--journal)")  # fmt: skip
    from bluestem.catalog.client import connect

    client = connect(args.catalog, args.api_key or os.environ.get("BLUESTEM_API_KEY"))
    uid = args.uid if args.uid in client else None
    uid = uid or _unique(
        args.uid, _catalog_uids(client, args.uid), f"the catalogue {args.catalog}"
    )
    return list(client[uid].documents())


def _values(mapping: dict) -> str:
    if not mapping:
        return "(no change)"
    return " ".join(f"{k}={_num(v)}" for k, v in mapping.items())


def _num(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else json.dumps(v)


def _measured(analysis: dict) -> str:
    values = analysis.get("values", {})
    unc = analysis.get("uncertainties", {})
    parts = [f"{k}={_num(v)}" + (f"±{unc[k]:.2g}" if isinstance(unc.get(k), int | float)
                                 else "")
             for k, v in values.items()]  # fmt: skip
    return " ".join(parts) or "-"


def _brief(value, most: int = 6):
    """``value`` for a header line: a list longer than ``most`` as its ends and length
    (a library of 297 thicknesses must not fill the screen; the record keeps them all)."""
    if isinstance(value, dict):
        return {k: _brief(v, most) for k, v in value.items()}
    if isinstance(value, list) and len(value) > most:
        return [*value[:2], f"... {len(value)} values ...", value[-1]]
    return value


def format_loop(record) -> list[str]:
    """The lines ``bluestem loop show`` prints for a :class:`~bluestem.loop.LoopRecord`."""
    info, stop = record.info, record.stop or {}
    agent = info.get("agent", {})
    status = stop.get("exit_status", "still running (no stop document)")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.start.get("time", 0)))
    lines = [
        f"closed loop {record.uid}: {status}" + (f" ({stop['reason']})" if stop.get("reason")
                                                  else ""),
        f"  agent:    {agent.get('class', '?')} {json.dumps(_brief(agent.get('parameters', {})))}",
        f"  goal:     {json.dumps(_brief(info.get('goal')))}",
        f"  budget:   {info.get('budget', {}).get('max_iterations', '?')} iteration(s); "
        f"settings {', '.join(info.get('settings', []))}; started {when}",
        "",
        f"{'it':>3}  {'requested':<24} {'read back':<24} {'method':<18} "
        f"{'measured':<28} {'decision':<18} inputs",
    ]  # fmt: skip
    for row in record.iterations:
        inputs = ", ".join(u[:8] for u in row.inputs) or "-"
        lines.append(f"{row.iteration:>3}  {_values(row.requested):<24} "
                     f"{_values(row.readback):<24} {row.method or '-':<18} "
                     f"{_measured(row.analysis):<28} {row.decision:<18} {inputs}")  # fmt: skip
    if record.failure:
        f = record.failure
        lines.append(f"failure:  iteration {f['iteration']}, at {f['stage']}: {f['error']}")
    if record.restore:
        r = record.restore
        outcome = "ok" if r["ok"] else r["error"]
        lines.append(f"restore:  {_values(r['requested'])} -> read back "
                     f"{_values(r['readback'])}: {outcome}")  # fmt: skip
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the loop's iteration table (or JSON lines with ``--json``)."""
    from bluestem.catalog.client import CatalogUnavailable
    from bluestem.loop import read_loop

    try:
        record = read_loop(_documents(args))
    except (CatalogUnavailable, LookupError, ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    if args.json:
        from dataclasses import asdict

        for row in record.iterations:
            print(json.dumps(asdict(row), sort_keys=True))
        return 0
    print("\n".join(format_loop(record)))
    return 0
