"""``bluestem demo``: a whole simulated 4D-STEM experiment on this machine.

Starts the sim IOC (loopback, private CA ports, random prefix) and, unless ``--catalog``
is given, an embedded Tiled catalogue; builds a session (:func:`bluestem.session.
build_session`) from an in-memory inventory; runs a fly ``raster`` with the progress bar;
reduces the frames live while they stream to disk (bright field, annular dark field,
centre of mass, iDPC: a derived run in the catalogue) and writes the live images as PNGs;
verifies the raw file; prints how to read both runs from the catalogue; stops what it
started, by PID. ``--loop`` runs the closed-loop experiments instead
(:mod:`bluestem.cli._demo_loop`).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    """Register ``bluestem demo``."""
    parser = subparsers.add_parser(
        "demo", help="run a simulated 4D-STEM raster end to end: IOC, session, catalogue, PNGs"
    )
    parser.add_argument(
        "--shape", nargs=2, type=int, default=(128, 128), metavar=("NY", "NX"),
        help="scan positions (default: 128 128)",
    )  # fmt: skip
    parser.add_argument(
        "--frame", type=int, default=128, metavar="K", help="frame size K x K (default: 128)"
    )
    parser.add_argument("--catalog", metavar="URI", help="use this Tiled catalogue instead "
                        "of starting one (its raw-data roots must include OUT/raw)")  # fmt: skip
    parser.add_argument("--api-key", metavar="KEY", help="key of --catalog")
    parser.add_argument(
        "--out", default="bluestem-demo", help="output directory (default: ./bluestem-demo)"
    )
    parser.add_argument("--specimen", default="srtio3", help="twin specimen (default: srtio3)")
    parser.add_argument(
        "--fov", type=float, default=2.0, metavar="NM",
        help="field of view in nm (default: 2, about five SrTiO3 unit cells: the scan "
             "samples the lattice finely enough for the images and the DPC rotation)",
    )  # fmt: skip
    parser.add_argument(
        "--dwell", type=float, default=1e-3,
        help="s per position: sets the dose; the time too with --paced (default: 1e-3)",
    )  # fmt: skip
    parser.add_argument(
        "--paced", action="store_true",
        help="pace frames at the dwell time (default: as fast as the frame path)",
    )  # fmt: skip
    from bluestem.cli._demo_loop import add_arguments

    add_arguments(parser)  # --loop: the closed-loop experiments instead of the raster
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the run succeeded, the file verifies and the catalogue has it."""
    from bluestem.procs import start_ioc

    if args.catalog and not args.api_key:
        print("--catalog needs --api-key", file=sys.stderr)
        return 2
    if args.loop:
        from bluestem.cli._demo_loop import run_loop

        return run_loop(args)
    ny, nx = args.shape
    out = Path(args.out).resolve()
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    started = []
    try:
        ioc_args = ["--data-dir", str(raw), "--specimen", args.specimen]
        if not args.paced:
            ioc_args.append("--max-rate")
        print(f"starting the sim IOC (log: {out / 'ioc.log'}) ...", flush=True)
        ioc = start_ioc(args=ioc_args, log_path=out / "ioc.log", timeout=120)
        started.append(("IOC", ioc))
        uri, key = args.catalog, args.api_key
        if not uri:
            from bluestem.catalog import start_server

            print(f"starting the catalogue (log: {out / 'catalog' / 'server.log'}) ...",
                  flush=True)  # fmt: skip
            key = secrets.token_hex(16)
            server = start_server(out / "catalog", api_key=key, raw_dirs=[raw], timeout=120)
            started.append(("catalogue", server))
            uri = server.uri
        return _experiment(args, ioc, uri, key, out, raw, (ny, nx))
    except Exception as exc:
        print(f"\ndemo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        for what, proc in reversed(started):
            code = proc.stop()
            print(f"{what} (pid {proc.pid}) stopped, exit code {code}", flush=True)


def _inventory(ioc, uri: str, key: str, out: Path, raw: Path, specimen: str) -> dict:
    env = ioc.env
    return {
        "devices": [
            {"class": "bluestem.devices.Microscope", "prefix": ioc.prefix + "MIC:", "name": "mic"},
            {
                "class": "bluestem.devices.ScanGenerator",
                "prefix": ioc.prefix + "SCAN:",
                "name": "scan",
            },
            {
                "class": "bluestem.devices.PixelatedDetector",
                "prefix": ioc.prefix + "DET:",
                "name": "det",
            },
        ],
        "data_root": str(raw),
        "journal_dir": str(out / "journal"),
        "catalog": {"uri": uri, "api_key": key},
        "metadata": {"sample": specimen, "operator": "bluestem demo"},
        "ca": {
            "addr_list": env["EPICS_CA_ADDR_LIST"],
            "auto_addr_list": env["EPICS_CA_AUTO_ADDR_LIST"],
            "server_port": env["EPICS_CA_SERVER_PORT"],
            "repeater_port": env["EPICS_CA_REPEATER_PORT"],
        },
        "baseline": ["mic"],
        "namespace": ["bluestem.plans"],
        "connect_timeout": 30,
        # A window when matplotlib has a GUI backend; the PNGs in any case.
        "live": {"images": True, "out_dir": str(out)},
    }


def _experiment(args, ioc, uri: str, key: str, out: Path, raw: Path, shape) -> int:
    from bluestem.frames import verify_file
    from bluestem.plans import raster
    from bluestem.session import build_session

    session = build_session(_inventory(ioc, uri, key, out, raw, args.specimen))
    try:
        det, mic, scan = session.det, session.mic, session.scan
        for setting, value in (
            (det.cam.bin_x, 1),
            (det.cam.bin_y, 1),
            (det.cam.size_x, args.frame),
            (det.cam.size_y, args.frame),
        ):
            setting.set(value).wait(30)  # fmt: skip
        print(f"raster {shape[0]} x {shape[1]} of {args.frame} x {args.frame} frames, "
              f"specimen {args.specimen}", flush=True)  # fmt: skip
        t0 = time.monotonic()
        (uid,) = session.RE(raster(det, scan, shape=shape, dwell=args.dwell, fov=args.fov,
                                   microscope=mic, md={"specimen": args.specimen}))  # fmt: skip
        elapsed = time.monotonic() - t0
        live = session.live
        derived = live.derived_uid
        synced = session.writer.flush(120) and {uid, derived} <= set(session.writer.synced)
        path = _raw_path(det)
        report = verify_file(path)
        progress = session.progress.summary()
        frames = shape[0] * shape[1]
        print(f"run uid:   {uid}")
        print(f"raw file:  {path}")
        print(f"verify:    {report.summary()}")
        print(f"frames/s:  {frames / elapsed:,.0f} ({frames} frames, run of {elapsed:.2f} s "
              "incl. configuration, baseline and live reduction)")  # fmt: skip
        print(f"dropped:   {progress['dropped']}")
        if derived and live.lags:
            lags = sorted(live.lags)
            print(f"live:      derived run {derived} ({', '.join(sorted(live.result['images']))})"
                  f"; lag datum -> image median {1e3 * lags[len(lags) // 2]:.0f} ms, "
                  f"max {1e3 * lags[-1]:.0f} ms")  # fmt: skip
        else:
            print("live:      NO derived run (see the log above)")
        print(
            f"catalogue: {uri}/api/v1/metadata/{uid}  "
            f"({'written' if synced else 'NOT written: see the journal, bluestem sync'})"
        )
        print("read it:   from tiled.client import from_uri")
        print(
            f"           run = from_uri({uri!r}, api_key={key!r})[{uid!r}]; "
            "run['primary']['det_image'][0, 0]"
        )
        if derived:
            print(f"           bf = from_uri(...)[{derived!r}]['primary']['bf'][0]")
        if not args.catalog:
            # The embedded catalogue stops with the demo; its files stay in OUT.
            port = uri.rsplit(":", 1)[-1]
            print(
                f"serve it:  bluestem serve --dir {out / 'catalog'} --raw-dir {raw} "
                f"--port {port} --api-key {key}   (the embedded server stops with the demo)"
            )
        for png in session.images.saved if session.images else ():
            print(f"image:     {png}")
        ok = report.ok and progress["dropped"] == 0 and synced and derived is not None
        print("demo OK" if ok else "demo FAILED", flush=True)
        return 0 if ok else 1
    finally:
        session.close()


def _raw_path(det) -> str:
    import os

    path = det.hdf.full_file_name.get(as_string=True)
    return path if os.path.isabs(path) else os.path.join(det.root_path.get(), path)
