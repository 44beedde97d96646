"""Fused reduction throughput against this machine's memory read bandwidth.

For each frame size and dtype, an in-memory stack of Poisson frames (mean 10 counts, a
bright-field disk of 170; a pool of 256 distinct frames cycled) goes through
``Reducer.add`` in blocks: (a) BF disk + ADF annulus + COM, (b) the default spec (the same
plus the sum and max patterns). Baselines measured in the same run: the memory read
bandwidth (numba parallel sum of a 1 GiB float64 array on all cores) and a naive numpy
reduction (float32 matmul with the masks + numpy COM) on a slice. Repeats are interleaved
with the bandwidth runs; each figure is the best run (the machine is shared: other work
only ever slows a run down), the JSON also holds the medians. Last line: one JSON object;
"ratio" = ours (a) at 128² uint16 / memory bandwidth, best against best (target >= 0.7).

    .venv/bin/python benchmarks/reduce_kernels.py [--sizes 64 128 256] [--mb 1024]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numba
import numpy as np

from bluestem.reduce import Reducer, ReductionSpec
from bluestem.reduce.kernels import parallel_sum


def make_stack(k: int, dtype: str, nbytes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rho = np.hypot(*(np.indices((k, k)) - k // 2))
    mean = np.where(rho < k / 8, 170.0, 10.0)
    pool = rng.poisson(mean, size=(256, k, k)).astype(dtype)
    n = max(256, nbytes // pool[0].nbytes)
    return pool[np.arange(n) % 256]


def memory_bandwidth(a: np.ndarray) -> float:
    t0 = time.perf_counter()
    parallel_sum(a)
    return a.nbytes / (time.perf_counter() - t0) / 1e9


def time_reducer(spec: ReductionSpec, stack: np.ndarray, block: int) -> float:
    red = Reducer(spec, (1, len(stack)))
    t0 = time.perf_counter()
    for first in range(0, len(stack), block):
        red.add(first, stack[first : first + block])
    return time.perf_counter() - t0


def time_numpy(spec: ReductionSpec, stack: np.ndarray, block: int = 256) -> float:
    """Naive numpy: float32 frames @ masks (BF, ADF, 1, y, x), then the COM ratios."""
    ky, kx = spec.frame_shape
    yy, xx = np.indices((ky, kx), dtype=np.float32)
    masks = spec.masks()
    weights = np.stack(
        [masks["bf"], masks["adf"], np.ones((ky, kx), np.float32),
         yy - spec.centre[0], xx - spec.centre[1]]
    ).reshape(5, -1).T  # fmt: skip
    t0 = time.perf_counter()
    for first in range(0, len(stack), block):
        part = stack[first : first + block].reshape(-1, ky * kx).astype(np.float32)
        sums = part @ weights
        com = sums[:, 3:] / sums[:, 2:3]
    del com
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--dtypes", nargs="+", default=["uint8", "uint16"])
    parser.add_argument("--mb", type=int, default=1024, help="stack size in MB (> the LLC)")
    parser.add_argument("--block", type=int, default=1024, help="frames per Reducer.add")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    big = np.ones(2**27)  # 1 GiB: well beyond the caches
    parallel_sum(big)
    print(f"numba threads: {numba.get_num_threads()} ({numba.threading_layer()} layer)")
    results, bandwidths = {}, []
    for k in args.sizes:
        full = ReductionSpec.default((k, k))
        spec = dataclasses.replace(full, sum_dp=False, max_dp=False)
        for dtype in args.dtypes:
            stack = make_stack(k, dtype, args.mb * 10**6)
            time_reducer(spec, stack[:64], 64)  # compile or load from the cache, untimed
            time_reducer(full, stack[:64], 64)
            fused, default = [], []
            for _ in range(args.repeats):
                bandwidths.append(memory_bandwidth(big))
                fused.append(time_reducer(spec, stack, args.block))
                default.append(time_reducer(full, stack, args.block))
            sub = stack[: max(256, len(stack) // 8)]
            naive = time_numpy(spec, sub)
            t_fused, t_default = min(fused), min(default)
            gbps = stack.nbytes / t_fused / 1e9
            r = {
                "frames_per_s": round(len(stack) / t_fused),
                "GB_per_s": round(gbps, 2),
                "GB_per_s_median": round(stack.nbytes / float(np.median(fused)) / 1e9, 2),
                "default_GB_per_s": round(stack.nbytes / t_default / 1e9, 2),
                "numpy_GB_per_s": round(sub.nbytes / naive / 1e9, 2),
                "stack_MB": round(stack.nbytes / 1e6),
            }
            results[f"{k}_{dtype}"] = r
            runs = ", ".join(f"{stack.nbytes / t / 1e9:.1f}" for t in fused)
            print(
                f"{k:4d}² {dtype:6s} BF+ADF+COM {r['frames_per_s']:9d} frames/s "
                f"{gbps:6.2f} GB/s (runs {runs}) | +sum+max {r['default_GB_per_s']:6.2f} GB/s"
                f" | numpy {r['numpy_GB_per_s']:5.2f} GB/s"
            )
    bw, bw_median = max(bandwidths), float(np.median(bandwidths))
    print(
        f"memory read (numba parallel sum, 1 GiB float64): best {bw:.1f} GB/s, median "
        f"{bw_median:.1f} of {min(bandwidths):.1f}..{bw:.1f}"
    )
    key = "128_uint16"
    ours = results[key]["GB_per_s"] if key in results else float("nan")
    print(
        json.dumps(
            {
                "results": results,
                "block_frames": args.block,
                "threads": numba.get_num_threads(),
                "baseline_memory_read_GB_per_s": round(bw, 2),
                "baseline_memory_read_GB_per_s_median": round(bw_median, 2),
                "repeats": args.repeats,
                "ratio": round(ours / bw, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
