"""``bluestem demo``: a whole simulated 4D-STEM experiment on this machine.

Starts the sim IOC (loopback, private CA ports, random prefix) and, unless ``--catalog``
is given, an embedded Tiled catalogue; builds a session (:func:`bluestem.session.
build_session`) from an in-memory inventory; runs a fly ``raster`` with the progress bar;
verifies the raw file; writes a summed diffraction pattern and a bright-field image as
PNGs; prints how to read the run from the catalogue; stops what it started, by PID.
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
        "--dwell", type=float, default=1e-3,
        help="s per position: sets the dose; the time too with --paced (default: 1e-3)",
    )  # fmt: skip
    parser.add_argument(
        "--paced", action="store_true",
        help="pace frames at the dwell time (default: as fast as the frame path)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the run succeeded, the file verifies and the catalogue has it."""
    from bluestem.procs import start_ioc

    if args.catalog and not args.api_key:
        print("--catalog needs --api-key", file=sys.stderr)
        return 2
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
        (uid,) = session.RE(raster(det, scan, shape=shape, dwell=args.dwell, microscope=mic,
                                   md={"specimen": args.specimen}))  # fmt: skip
        elapsed = time.monotonic() - t0
        synced = session.writer.flush(120) and uid in session.writer.synced
        path = _raw_path(det)
        report = verify_file(path)
        progress = session.progress.summary()
        frames = shape[0] * shape[1]
        print(f"run uid:   {uid}")
        print(f"raw file:  {path}")
        print(f"verify:    {report.summary()}")
        print(f"frames/s:  {frames / elapsed:,.0f} ({frames} frames, run of {elapsed:.2f} s "
              "incl. configuration and baseline)")  # fmt: skip
        print(f"dropped:   {progress['dropped']}")
        print(
            f"catalogue: {uri}/api/v1/metadata/{uid}  "
            f"({'written' if synced else 'NOT written: see the journal, bluestem sync'})"
        )
        print("read it:   from tiled.client import from_uri")
        print(
            f"           run = from_uri({uri!r}, api_key={key!r})[{uid!r}]; "
            "run['primary']['det_image'][0, 0]"
        )
        if not args.catalog:
            # The embedded catalogue stops with the demo; its files stay in OUT.
            port = uri.rsplit(":", 1)[-1]
            print(
                f"serve it:  bluestem serve --dir {out / 'catalog'} --raw-dir {raw} "
                f"--port {port} --api-key {key}   (the embedded server stops with the demo)"
            )
        for png in _pngs(path, out, uid[:8]):
            print(f"image:     {png}")
        ok = report.ok and progress["dropped"] == 0 and synced
        print("demo OK" if ok else "demo FAILED", flush=True)
        return 0 if ok else 1
    finally:
        session.close()


def _raw_path(det) -> str:
    import os

    path = det.hdf.full_file_name.get(as_string=True)
    return path if os.path.isabs(path) else os.path.join(det.root_path.get(), path)


def _pngs(path: str, out: Path, tag: str) -> list[Path]:
    """Sum diffraction pattern, bright-field and annular dark-field images, computed row by
    row from the file."""
    import h5py
    import matplotlib
    import numpy as np

    from bluestem.frames import FRAMES_PATH

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with h5py.File(path, "r") as f:
        data = f[FRAMES_PATH]
        ny, nx, ky, kx = data.shape
        cal = dict(f["metadata/calibration"].attrs) if "metadata/calibration" in f else {}
        mic = dict(f["metadata/microscope"].attrs) if "metadata/microscope" in f else {}
        total = np.zeros((ky, kx))
        for y in range(ny):
            total += data[y].sum(axis=0, dtype=np.float64)
        # Bright field: half the central disk (a small BF detector shows the lattice's
        # phase contrast best), radius from the convergence angle and the calibration
        # when the file has them, else where the mean pattern is bright.
        yy, xx = np.indices((ky, kx))
        weight = total.sum() or 1.0
        cy, cx = (yy * total).sum() / weight, (xx * total).sum() / weight
        alpha, per_px = mic.get("ConvergenceAngle"), cal.get("angle_per_pixel")
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        if alpha and per_px:
            disk = float(alpha) * 1e-3 / float(per_px)
        else:
            disk = np.sqrt((total >= 0.5 * total.max()).sum() / np.pi)
        mask = r2 <= (0.5 * disk) ** 2
        # Annular dark field: everything scattered outside the bright disk.
        annulus = r2 >= (1.1 * disk) ** 2
        bf, adf = np.empty((ny, nx)), np.empty((ny, nx))
        for y in range(ny):
            row = data[y]
            bf[y] = row[:, mask].sum(axis=1, dtype=np.float64)
            adf[y] = row[:, annulus].sum(axis=1, dtype=np.float64) if annulus.any() else 0.0

    written = []
    for name, image, title in (
        ("sum-diffraction", np.log1p(total), "sum diffraction pattern (log)"),
        ("bright-field", bf, f"bright field ({int(mask.sum())} px disk)"),
        ("annular-dark-field", adf, f"annular dark field ({int(annulus.sum())} px)"),
    ):
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.imshow(image, cmap="inferno" if name == "sum-diffraction" else "gray")
        ax.set_title(title)
        ax.set_axis_off()
        target = out / f"{name}-{tag}.png"
        fig.savefig(target, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(target)
    return written
