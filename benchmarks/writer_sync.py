"""The cost of power-loss safety: FrameWriter with ``sync_interval`` None (never fsync,
the default: what the page cache holds is lost in a power cut), 1 s and 0 (every row), in
the same run, interleaved, medians of ``--repeat``.

The clock stops when ``close()`` returns, without a final fsync: "none" is then what an
acquisition costs with nothing made durable, the baseline. Last line: one JSON object;
"ratio" = frames/s with a 1 s sync / frames/s without sync.

    .venv/bin/python benchmarks/writer_sync.py [--ny 64 --nx 256 --k 128] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from writer_rate import make_stack

from bluestem.frames import FrameWriter

MODES = {"none": None, "1s": 1.0, "every_row": 0.0}


def run_once(stack, folder: Path, mode: str) -> dict:
    ny, nx, ky, kx = stack.shape
    path = folder / f"sync-{mode}.h5"
    os.sync()  # no earlier dirty pages written back during this measurement
    writer = FrameWriter(path, scan_shape=(ny, nx), frame_shape=(ky, kx), dtype=stack.dtype,
                         sync_interval=MODES[mode])  # fmt: skip
    t0 = time.perf_counter()
    writer.open()
    for y in range(ny):
        writer.submit(y * nx, stack[y])
    writer.close()
    seconds = time.perf_counter() - t0
    path.chmod(0o644)
    path.unlink()
    return {"frames_per_s": ny * nx / seconds, "syncs": writer.syncs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ny", type=int, default=64)
    parser.add_argument("--nx", type=int, default=256)
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    stack = make_stack(args.ny, args.nx, args.k)
    gb = stack.nbytes / 1e9
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for _ in range(args.repeat):
            for mode in MODES:  # interleaved: the disk's mood hits every mode alike
                results[mode].append(run_once(stack, Path(tmp), mode))
    figures = {}
    for mode, runs in results.items():
        rates = [r["frames_per_s"] for r in runs]
        figures[mode] = {
            "frames_per_s_median": statistics.median(rates),
            "frames_per_s_all": [round(r) for r in rates],
            "GB_per_s_median": statistics.median(rates) * gb / (args.ny * args.nx),
            "syncs": runs[0]["syncs"],
        }
        print(f"sync {mode:>9}: {figures[mode]['frames_per_s_median']:9.0f} frames/s "
              f"({figures[mode]['GB_per_s_median']:.2f} GB/s, {figures[mode]['syncs']} "
              f"fsyncs), runs {figures[mode]['frames_per_s_all']}")  # fmt: skip
    base = figures["none"]["frames_per_s_median"]
    out = {
        "benchmark": "writer_sync",
        "shape": [args.ny, args.nx, args.k, args.k],
        "GB": gb,
        "figures": figures,
        "baseline": {"what": "the same writer, never fsynced", "frames_per_s": base},
        "ratio_every_row": figures["every_row"]["frames_per_s_median"] / base,
        "ratio": figures["1s"]["frames_per_s_median"] / base,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
