"""``bluestem reduce``: recompute a stored run's virtual images and save a derived run.

The stored documents are replayed through the same :class:`LiveReduction` the session
uses live, so a derived run made offline equals the live one bit for bit when the spec is
the same. With ``--scheduler`` the blocks are reduced on a Dask cluster (``local`` starts
a LocalCluster) and combined: the result is identical.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bluestem.cli._runs import _catalog_uids, _unique

NAME = "reduce"


def _calibration(start: dict) -> dict | None:
    """The raw run's calibration, or None (and a warning) when it cannot scale a PNG."""
    from bluestem.callbacks.image_panels import usable_calibration

    calibration, why = usable_calibration(start.get("calibration"))
    if why:
        print(f"warning: PNGs without a scale: {why}", file=sys.stderr)
    return calibration


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``reduce`` subcommand."""
    parser = subparsers.add_parser(
        NAME,
        help="recompute a run's virtual images from its raw frames; save a derived run",
        description=(
            "Replay a stored run (from the catalogue, or from the document journal with "
            "--journal) through the live-reduction code and save the images as a derived "
            "run linked by parent_uid. Without --bf/--adf/--com/--mask the run's recorded "
            "reduction spec is used (a bit-for-bit recomputation); with any of them, the "
            "spec holds exactly those."
        ),
    )
    parser.add_argument(
        "uid",
        help="the raw run's uid, or a unique prefix of it (e.g. the 8 characters "
        "in the PNG names)",
    )
    parser.add_argument(
        "--catalog",
        default=os.environ.get("BLUESTEM_CATALOG_URI"),
        metavar="URI",
        help="Tiled server URI (default: $BLUESTEM_CATALOG_URI)",
    )
    parser.add_argument("--api-key", default=None, help="default: $BLUESTEM_API_KEY")
    parser.add_argument(
        "--journal",
        metavar="DIR",
        help="read the run from this document journal instead (default, only when no "
        "catalogue is given: $BLUESTEM_JOURNAL_DIR)",
    )
    parser.add_argument("--bf", type=float, metavar="R", help="bright-field disc radius (px)")
    parser.add_argument(
        "--adf", type=float, nargs=2, metavar=("R1", "R2"), help="annular dark field (px)"
    )
    parser.add_argument("--com", action="store_true", help="centre of mass (and DPC)")
    parser.add_argument("--com-radius", type=float, metavar="R", help="COM inside R (px)")
    parser.add_argument(
        "--centre", type=float, nargs=2, metavar=("CY", "CX"), help="pattern centre (px)"
    )
    parser.add_argument(
        "--mask",
        action="append",
        default=[],
        metavar="FILE",
        help="a weight mask (.npy of the frame shape), named after the file; repeatable",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address (tcp://host:port), or 'local' for a LocalCluster",
    )
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    parser.add_argument("--out", metavar="DIR", help="also write PNGs of the images here")
    parser.set_defaults(func=run)
    return parser


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _override(args) -> dict | None:
    """The shorthand spec of the command-line flags, or None (use the run's spec)."""
    if not (args.bf or args.adf or args.com or args.mask or args.com_radius):
        return None
    import numpy as np

    short: dict = {"com": bool(args.com or args.com_radius)}
    if args.bf is not None:
        short["bf"] = args.bf
    if args.adf is not None:
        short["adf"] = tuple(args.adf)
    if args.com_radius is not None:
        short["com_radius"] = args.com_radius
    if args.centre is not None:
        short["centre"] = tuple(args.centre)
    masks = {}
    for name in args.mask:
        path = Path(name)
        try:
            masks[path.stem] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--mask {name}: cannot read it as a .npy array ({exc})") from None
    if masks:
        short["masks"] = masks
    return short


def _documents(args, key):
    """(documents, catalogue client or None) of the run; the uid may be a prefix."""
    if not args.uid:
        raise LookupError("the uid is empty; give the run's uid or a prefix of it")
    client = None
    if args.catalog:
        from bluestem.catalog.client import connect

        client = connect(args.catalog, key)
    if args.journal:
        from bluestem.journal import find_runs

        runs = {r.uid: r for r in find_runs(args.journal)}
        uid = _unique(args.uid, runs, f"the journal {args.journal}")
        return list(runs[uid].documents()), client
    if client is None:
        raise LookupError("no catalogue (--catalog or $BLUESTEM_CATALOG_URI) and no journal "
                          "(--journal or $BLUESTEM_JOURNAL_DIR)")  # fmt: skip
    # A run's key is its start uid: a whole uid is found directly.
    uid = args.uid if args.uid in client else None
    uid = uid or _unique(
        args.uid, _catalog_uids(client, args.uid), f"the catalogue {args.catalog}"
    )
    return list(client[uid].documents()), client


def run(args: argparse.Namespace) -> int:
    """Replay, reduce, save; print the derived run's uid and images."""
    from bluestem.catalog.client import CatalogUnavailable

    if args.workers < 1:
        return _fail(f"--workers {args.workers}: allowed >= 1")
    key = args.api_key or os.environ.get("BLUESTEM_API_KEY")
    if not args.journal and not args.catalog:
        # The session's journal is the fallback source: a catalogue, when given, wins.
        args.journal = os.environ.get("BLUESTEM_JOURNAL_DIR") or None
    try:
        override = _override(args)
        docs, client = _documents(args, key)
    except (CatalogUnavailable, LookupError, ValueError) as exc:
        return _fail(str(exc))
    if not docs or docs[0][0] != "start":
        return _fail(f"run {args.uid}: its documents do not begin with a start document")
    start = docs[0][1]

    from bluestem.reduce import run_spec

    try:
        spec = run_spec(start, override)
    except ValueError as exc:
        return _fail(f"run {args.uid}: {exc}")
    return _reduce(args, docs, spec, client)


def _reduce(args, docs, spec, client) -> int:
    from bluestem.callbacks import LiveReduction
    from bluestem.journal import DocumentJournal
    from bluestem.reduce.executors import DaskExecutor

    sinks, journal = [], None
    if client is not None:
        from bluestem.catalog.client import tiled_writer

        sinks.append(tiled_writer(client, batch_size=100))
    if args.journal:
        journal = DocumentJournal(args.journal)
        sinks.insert(0, journal)
    cluster = dask = None
    executor = None
    mode = "offline"
    if args.scheduler:
        from distributed import Client, LocalCluster

        if args.scheduler == "local":
            cluster = LocalCluster(
                n_workers=args.workers, threads_per_worker=1, dashboard_address=None
            )
            dask = Client(cluster)
        else:
            dask = Client(args.scheduler)
        mode = "distributed"

        def executor(spec, shape):
            return DaskExecutor(dask, spec, shape)

    live = LiveReduction(
        sinks, spec=spec, executor=executor, mode=mode, threads=os.cpu_count() or 1
    )
    try:
        for name, doc in docs:
            live(name, doc)
    finally:
        if journal is not None:
            journal.close()
        if dask is not None:
            dask.close()
        if cluster is not None:
            cluster.close()
    if live.derived_uid is None:
        return _fail(f"run {args.uid}: the reduction failed (see the log above)")
    images = live.result["images"]
    print(f"derived run: {live.derived_uid} (parent {docs[0][1]['uid']}, {mode})")
    print(f"images:      {', '.join(sorted(images))}")
    if live.result["dpc"]:
        d = live.result["dpc"]
        how = "estimated" if d["estimated"] else "from the spec"
        print(f"dpc:         rotation {d['rotation_deg']:.2f} deg, flip {d['flip']} ({how})")
    if args.out:
        from bluestem.callbacks.live_images import save_image_pngs

        start = docs[0][1]
        # Named by the raw run, as the session's live PNGs are: a reduction of the same
        # run replaces them; the title names the derived run.
        pngs = save_image_pngs(images, Path(args.out), start["uid"][:8], masks=spec.masks(),
                               calibration=_calibration(start), centre=spec.centre,
                               run_uid=start["uid"], derived_uid=live.derived_uid)  # fmt: skip
        for png in pngs:
            print(f"image:       {png}")
    return 0
