"""Benchmark: reading a raster's raw 4D frames back from the catalogue over HTTP.

A 32 x 32 raster of 128^2 uint16 frames is acquired (sim IOC at --max-rate, RunEngine,
``bluestem.plans.raster``, ResilientTiledWriter into a real ``bluestem serve``). Then, with
``tiled.client.from_uri(uri, api_key=...)[uid]["primary"]["det_image"]``: one diffraction
pattern, one scan row and the whole (ny, nx, ky, kx) array, each read ``--repeat`` times
(median ms and MB/s; every read is checked equal to the file).

Baseline, in the same run: the same three reads straight from the HDF5 file with h5py
(file opened for every read, page cache warm for both). ``ratio`` = HTTP MB/s / h5py MB/s for the
whole array (higher is better). If the array cannot be read over HTTP the JSON still
holds what was measured, with an ``error`` key saying what failed.

Usage: python benchmarks/tiled_read.py [--shape NY NX] [--frame K] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Bench, file_path

READS = {
    "pattern": lambda ny, nx: (ny // 2, nx // 2),
    "row": lambda ny, nx: (ny // 2,),
    "whole": lambda ny, nx: (),
}


def timed(read, repeat: int, reference: np.ndarray) -> dict:
    """Median and min seconds of ``read()`` over ``repeat`` calls; checks the values."""
    seconds = []
    for _ in range(repeat):
        t = time.perf_counter()
        value = np.asarray(read())
        seconds.append(time.perf_counter() - t)
        if value.shape != reference.shape or not np.array_equal(value, reference):
            raise AssertionError(f"read {value.shape} differs from the file {reference.shape}")
    med = statistics.median(seconds)
    return {
        "ms": round(med * 1e3, 2),
        "min_ms": round(min(seconds) * 1e3, 2),
        "mb_s": round(reference.nbytes / med / 1e6, 1),
        "bytes": int(reference.nbytes),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=2, type=int, default=(32, 32), help="scan NY NX")
    parser.add_argument("--frame", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ny, nx = args.shape
    if not 1 <= args.repeat <= 100:
        raise SystemExit(f"--repeat {args.repeat}: allowed 1..100")
    work = Path(tempfile.mkdtemp(prefix="bluestem-tiledread-"))
    http: dict[str, dict] = {}
    local: dict[str, dict] = {}
    error = None
    try:
        with Bench(work) as bench:
            import h5py

            from bluestem.plans import raster

            bench.set_frame(args.frame)
            docs = []
            token = bench.RE.subscribe(
                lambda name, doc: docs.append(doc) if name == "stream_resource" else None
            )
            uid = bench.RE(raster(bench.det, bench.scan, shape=(ny, nx), dwell=1e-4))
            uid = uid.run_start_uids[0]
            bench.RE.unsubscribe(token)
            if not bench.writer.flush(120) or bench.writer.failures:
                raise RuntimeError(f"catalogue write failed: {bench.writer.failures}")
            (sres,) = docs
            path, dataset = file_path(sres["uri"]), sres["parameters"]["dataset"]
            print(f"raster {ny}x{nx} of {args.frame}^2 in the catalogue: run {uid}")
            print(f"  file {path} dataset {dataset} chunks {sres['parameters']['chunk_shape']}")

            with h5py.File(path, "r") as f:
                refs = {k: f[dataset][sel(ny, nx)] for k, sel in READS.items()}

            def h5read(s):
                # Opened per read, as a new reader (or the server) would: otherwise HDF5's
                # chunk cache answers repeats of a one-chunk read without touching the file.
                with h5py.File(path, "r") as f:
                    return f[dataset][s]

            for k, sel in READS.items():
                s = sel(ny, nx)
                local[k] = timed(lambda s=s: h5read(s), args.repeat, refs[k])

            try:
                t = time.perf_counter()
                arr = bench.client()[uid]["primary"]["det_image"]
                lookup_ms = (time.perf_counter() - t) * 1e3
                print(f"  HTTP: from_uri + run + key lookup {lookup_ms:.1f} ms, "
                      f"array {arr.shape} {arr.dtype}")  # fmt: skip
                for k, sel in READS.items():
                    s = sel(ny, nx)
                    http[k] = timed(lambda s=s: arr[s] if s else arr.read(), args.repeat, refs[k])
            except Exception as exc:
                error = f"HTTP read failed: {type(exc).__name__}: {exc}"
                traceback.print_exc()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    names = {"pattern": "one diffraction pattern", "row": "one scan row", "whole": "whole 4D"}
    for k in READS:
        h, b = http.get(k), local[k]
        line = f"{names[k]:<24} ({b['bytes'] / 1e6:8.3f} MB): "
        line += f"HTTP {h['ms']:8.1f} ms {h['mb_s']:8.1f} MB/s | " if h else "HTTP   failed | "
        line += f"h5py {b['ms']:7.2f} ms {b['mb_s']:8.1f} MB/s"
        print(line)
    if error:
        print(f"ERROR: {error}")
    whole = http.get("whole")
    ratio = whole["mb_s"] / local["whole"]["mb_s"] if whole else None
    if ratio is not None:
        print(f"ratio HTTP / h5py MB/s for the whole array: {ratio:.3f} (higher is better)")
    out = {
        "shape": [ny, nx, args.frame, args.frame],
        "http": http,
        "baseline_h5py": local,
        "mb_s": whole["mb_s"] if whole else None,
        "baseline_mb_s": local["whole"]["mb_s"],
        "ratio": round(ratio, 4) if ratio is not None else None,
        "ratio_definition": "HTTP MB/s / h5py MB/s, whole array (higher is better)",
    }
    if error:
        out["error"] = error
    print(json.dumps(out))
    return 1 if error else 0


if __name__ == "__main__":
    raise SystemExit(main())
