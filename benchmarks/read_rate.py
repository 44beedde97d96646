"""Raw-frame read rate: FrameReader against h5py row reads and a copy from memory.

Writes a (ny, nx, k, k) uint16 Poisson stack (default 128 x 256 x 128², 1 GiB) with
FrameWriter, uncompressed and bitshuffle-lz4, reads each file once to warm the page
cache, then times whole-row reads, interleaved over the repeats (medians):
FrameReader.read (verify on, 1 and 2 threads; verify off), h5py ``ds[row]`` (the
baseline: HDF5's own fletcher32 check and copy) and ``stack[row].copy()`` from memory.
Last line: one JSON object; "ratio" = FrameReader (verify, default threads) / h5py.

    .venv/bin/python benchmarks/read_rate.py [--ny 128 --nx 256 --k 128] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (bitshuffle for the compressed file's h5py baseline)
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from writer_rate import make_stack

from bluestem.frames import FRAMES_PATH, FrameReader, FrameWriter


def write(stack: np.ndarray, path: Path, compression=None) -> None:
    ny, nx, ky, kx = stack.shape
    with FrameWriter(
        path, scan_shape=(ny, nx), frame_shape=(ky, kx), dtype=stack.dtype, compression=compression
    ) as w:
        for y in range(ny):
            w.submit(y * nx, stack[y])


def timed(read_row, ny: int) -> float:
    t0 = time.perf_counter()
    for y in range(ny):
        read_row(y)
    return time.perf_counter() - t0


def ours(path: Path, nx: int, **kw):
    reader = FrameReader(path, **kw)
    return reader, lambda y: reader.read(y * nx, nx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ny", type=int, default=128)
    parser.add_argument("--nx", type=int, default=256)
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    stack = make_stack(args.ny, args.nx, args.k)
    # make_stack cycles a pool of frames through a broadcast view: make it a real array.
    stack = np.ascontiguousarray(stack)
    ny, nx = args.ny, args.nx
    print(f"stack {stack.shape} uint16, {stack.nbytes / 2**30:.2f} GiB")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        plain, lz4 = Path(tmp) / "plain.h5", Path(tmp) / "lz4.h5"
        write(stack, plain)
        write(stack, lz4, "bitshuffle-lz4")
        # The same SWMR read mode as FrameReader (HDF5 refuses mixed modes in one process).
        files = [h5py.File(p, "r", libver="latest", swmr=True) for p in (plain, lz4)]
        readers = {
            "ours": ours(plain, nx),
            "ours_1_thread": ours(plain, nx, threads=1),
            "ours_no_verify": ours(plain, nx, verify=False),
            "ours_lz4": ours(lz4, nx),
        }
        methods = {name: fn for name, (_, fn) in readers.items()}
        methods["h5py"] = lambda y, ds=files[0][FRAMES_PATH]: ds[y]
        methods["h5py_lz4"] = lambda y, ds=files[1][FRAMES_PATH]: ds[y]
        methods["memory_copy"] = lambda y: stack[y].copy()
        for y in (0, ny // 2, ny - 1):  # the exact-data check, before any timing
            for name, fn in methods.items():
                if not np.array_equal(fn(y), stack[y]):
                    raise SystemExit(f"{name} read row {y} wrongly")
        for fn in methods.values():  # page cache, numba cache, HDF5 plugins: warm
            timed(fn, ny)
        seconds: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                seconds[name].append(timed(fn, ny))
        for reader, _ in readers.values():
            reader.close()
        for f in files:
            f.close()

    frames = ny * nx
    figures = {}
    for name, runs in seconds.items():
        median = statistics.median(runs)
        figures[name] = {
            "frames_per_s": round(frames / median),
            "GB_per_s": round(stack.nbytes / median / 1e9, 2),
        }
        print(
            f"{name:15s} {frames / median:10,.0f} frames/s {stack.nbytes / median / 1e9:6.2f} "
            f"GB/s  (runs {', '.join(f'{frames / s / 1e3:.0f}k' for s in runs)} frames/s)"
        )
    base = figures.pop("h5py")
    print(
        json.dumps(
            {
                "shape": list(stack.shape),
                "dtype": "uint16",
                "repeats": args.repeats,
                "figures": figures,
                "baseline": {"name": "h5py ds[row], fletcher32 by HDF5"} | base,
                "ratio": round(figures["ours"]["frames_per_s"] / base["frames_per_s"], 3),
                "ratio_lz4": round(
                    figures["ours_lz4"]["frames_per_s"] / figures["h5py_lz4"]["frames_per_s"], 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
