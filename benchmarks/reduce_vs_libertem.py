"""BF + ADF + COM: bluestem's fused reducer against LiberTEM on the same data file.

A (ny, nx, k, k) uint16 Poisson stack (as benchmarks/reduce_kernels.py) is written once
to a .npy file in a temporary folder and read through the page cache by both sides.
LiberTEM runs in its own interpreter (``--libertem-python``; default: this one if it
imports libertem), since its numpy/numba pins need not match ours: masks (BF disk, ADF
annulus, the very weights of our spec) with ``ApplyMasksUDF`` and the centre of mass with
``CoMUDF``, both fused in one ``run_udf`` pass and as two separate passes, under its
inline, threads and default (Dask) executors; its best time counts. Ours: ``Reducer.add``
in blocks, (a) from the same .npy file (``np.load`` then reduce, or a read-only memory
map: the same starting point), (b) with the frames already in memory, measured before
and after LiberTEM; our best run counts too (the machine is shared: other work only slows
a run down). The results are compared with LiberTEM's. Last line: one JSON object;
"ratio" = ours from the file / LiberTEM's best (target >= 2).

    .venv/bin/python benchmarks/reduce_vs_libertem.py \\
        --libertem-python /work/venvs/libertem/bin/python [--scan 128 128 --k 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def libertem_worker(args) -> None:
    """Runs under the LiberTEM interpreter: times LiberTEM, saves its results."""
    import libertem
    import libertem.api as lt
    from libertem.udf.com import CoMUDF
    from libertem.udf.masks import ApplyMasksUDF

    masks = np.load(args.masks)
    cy, cx = (float(v) for v in args.centre)
    factories = [lambda m=m: m for m in masks]
    timings: dict[str, float] = {}
    saved = {}

    def udfs():
        return [
            ApplyMasksUDF(mask_factories=factories, mask_dtype=np.float32),
            CoMUDF.with_params(cy=cy, cx=cx),
        ]

    for executor in args.executors:
        kw = {"cpus": os.cpu_count()} if executor == "threads" else {}
        ctx = lt.Context.make_with(executor, **kw)
        try:
            ds = ctx.load("npy", path=args.worker)
            for mode in ("fused", "separate"):
                best = float("inf")
                for rep in range(args.repeats + 1):  # the first run warms up (JIT, workers)
                    t0 = time.perf_counter()
                    if mode == "fused":
                        res = ctx.run_udf(dataset=ds, udf=udfs())
                    else:
                        u = udfs()
                        res = (
                            ctx.run_udf(dataset=ds, udf=u[0]),
                            ctx.run_udf(dataset=ds, udf=u[1]),
                        )
                    seconds = time.perf_counter() - t0
                    if rep:
                        best = min(best, seconds)
                timings[f"{executor}/{mode}"] = best
                if not saved:
                    saved = {
                        "intensity": np.asarray(res[0]["intensity"].data),
                        "field": np.asarray(res[1]["field"].data),
                    }
        finally:
            ctx.close()
    np.savez(args.out, **saved)
    print(json.dumps({"libertem": libertem.__version__, "seconds": timings}))


def default_libertem_python() -> str | None:
    probe = subprocess.run([sys.executable, "-P", "-c", "import libertem"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=int, nargs=2, default=[128, 128], metavar=("NY", "NX"))
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block", type=int, default=4096, help="frames per Reducer.add")
    parser.add_argument("--libertem-python", default=None, help="interpreter with libertem")
    parser.add_argument("--executors", nargs="+", default=["inline", "threads", "dask"])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    # worker mode (internal)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--masks", help=argparse.SUPPRESS)
    parser.add_argument("--centre", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        libertem_worker(args)
        return
    run_comparison(args)


def time_ours(spec, get_frames, n: int, block: int, repeats: int) -> list[float]:
    from bluestem.reduce import Reducer

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        frames = get_frames()
        red = Reducer(spec, (1, n))
        for first in range(0, n, block):
            red.add(first, frames[first : first + block])
        times.append(time.perf_counter() - t0)
    return times


def run_comparison(args) -> None:
    import dataclasses

    from reduce_kernels import make_stack

    from bluestem.reduce import Reducer, ReductionSpec

    ny, nx = args.scan
    k, n = args.k, args.scan[0] * args.scan[1]
    full = ReductionSpec.default((k, k))
    spec = dataclasses.replace(full, sum_dp=False, max_dp=False)
    stack = make_stack(k, "uint16", n * k * k * 2)[:n]
    python = args.libertem_python or default_libertem_python()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "stack.npy"
        np.save(path, stack.reshape(ny, nx, k, k))
        masks_path = Path(tmp) / "masks.npy"
        masks = spec.masks()
        np.save(masks_path, np.stack([masks["bf"], masks["adf"]]))
        print(f"stack {(ny, nx, k, k)} uint16, {stack.nbytes / 1e6:.0f} MB in {path}")
        os.sync()  # writeback of the new file would otherwise steal a core from the timing
        np.load(path)  # into the page cache
        # Compile or load from the cache: writable frames, and read-only ones (a memory
        # map), which numba types (and compiles) separately.
        time_ours(spec, lambda: stack, 256, 256, 1)
        time_ours(spec, lambda: np.load(path, mmap_mode="r").reshape(n, k, k), 256, 256, 1)
        t_load, t_mmap, t_mem = [], [], []

        def measure_ours() -> None:
            t_mem.extend(time_ours(spec, lambda: stack, n, args.block, args.repeats))
            t_mmap.extend(time_ours(spec, lambda: np.load(path, mmap_mode="r").reshape(n, k, k),
                                    n, args.block, args.repeats))  # fmt: skip
            t_load.extend(time_ours(spec, lambda: np.load(path).reshape(n, k, k), n,
                                    args.block, args.repeats))  # fmt: skip

        measure_ours()
        red = Reducer(spec, (ny, nx))
        red.add(0, stack)
        ours = red.images()
        lt = None
        if python is None:
            print("LiberTEM: no interpreter imports libertem; give --libertem-python")
        else:
            out = Path(tmp) / "libertem.npz"
            cmd = [
                python, __file__, "--worker", str(path), "--masks", str(masks_path),
                "--centre", *map(str, spec.centre), "--out", str(out),
                "--repeats", str(args.repeats), "--executors", *args.executors,
            ]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:])
                raise SystemExit(f"LiberTEM worker failed ({done.returncode})")
            lt = json.loads(done.stdout.strip().splitlines()[-1])
            got = np.load(out)
            rel = max(
                float(np.max(np.abs(got["intensity"][..., i] - ours[name]) / ours[name]))
                for i, name in enumerate(("bf", "adf"))
            )
            com = max(
                float(np.nanmax(np.abs(got["field"][..., i] - ours[f"com_{a}"])))
                for i, a in enumerate("yx")
            )
            lt["max_rel_diff_bf_adf"] = rel
            lt["max_abs_diff_com_px"] = com
        measure_ours()  # before and after LiberTEM

    def fps(seconds: float) -> float:
        return n / seconds

    # Best runs, as for LiberTEM: the machine is shared, and other work only slows a run.
    ours_file = min(min(t_load), min(t_mmap))
    ours_mem = min(t_mem)
    for label, times in (("np.load", t_load), ("memory map", t_mmap), ("in memory", t_mem)):
        print(f"ours {label:10s} runs: {', '.join(f'{fps(t):.0f}' for t in times)} frames/s")
    print(
        f"ours (best): from the file {fps(min(t_load)):9.0f} frames/s (np.load), "
        f"{fps(min(t_mmap)):9.0f} (memory map); in memory {fps(ours_mem):9.0f} frames/s "
        f"({stack.nbytes / ours_mem / 1e9:.1f} GB/s)"
    )
    summary = {
        "shape": [ny, nx, k, k],
        "ours_file_frames_per_s": round(fps(ours_file)),
        "ours_load_frames_per_s": round(fps(min(t_load))),
        "ours_mmap_frames_per_s": round(fps(min(t_mmap))),
        "ours_memory_frames_per_s_median": round(fps(float(np.median(t_mem)))),
        "ours_memory_frames_per_s": round(fps(ours_mem)),
        "repeats": args.repeats,
    }
    if lt is None:
        summary.update(libertem=None, ratio=None)
    else:
        per = {key: round(fps(s)) for key, s in lt["seconds"].items()}
        best_key = max(per, key=per.get)
        for key, value in per.items():
            print(f"LiberTEM {lt['libertem']} {key:16s} {value:9d} frames/s")
        print(
            f"LiberTEM vs ours: BF/ADF max relative difference {lt['max_rel_diff_bf_adf']:.1e}, "
            f"COM max difference {lt['max_abs_diff_com_px']:.1e} px"
        )
        summary.update(
            libertem=lt["libertem"],
            libertem_frames_per_s=per,
            baseline_libertem_best=best_key,
            baseline_libertem_frames_per_s=per[best_key],
            max_rel_diff_bf_adf=lt["max_rel_diff_bf_adf"],
            max_abs_diff_com_px=lt["max_abs_diff_com_px"],
            ratio_in_memory=round(fps(ours_mem) / per[best_key], 2),
            ratio=round(fps(ours_file) / per[best_key], 2),
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
