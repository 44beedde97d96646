"""Raw-frame writer throughput against this machine's raw fsync'd disk bandwidth.

Writes a (ny, nx, k, k) uint16 Poisson stack (mean ~18 counts, a bright central disk)
with FrameWriter (a) uncompressed: fletcher32 computed in numba + direct chunk writes,
(b) bitshuffle-lz4 + fletcher32 through the filter pipeline, each fsync'd before the
clock stops; the baseline is plain os.write of the same number of bytes + fdatasync.
Optionally sweeps the chunk size (--chunk-sweep). Last line: one JSON object;
"ratio" = ours uncompressed / raw disk.

    .venv/bin/python benchmarks/writer_rate.py [--ny 64 --nx 256 --k 128] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bluestem.frames import FrameWriter


def make_stack(ny: int, nx: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:k, :k] - (k - 1) / 2
    mean = np.full((k, k), 10.0)
    mean[np.hypot(yy, xx) < k / 8] = 170.0  # the bright-field disk
    pool = rng.poisson(mean, size=(min(ny * nx, 1024), k, k)).astype(np.uint16)
    # A pool of distinct frames cycled over the scan: realistic statistics per chunk,
    # without minutes of random number generation.
    return pool[np.arange(ny * nx) % pool.shape[0]].reshape(ny, nx, k, k)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def time_writer(stack: np.ndarray, folder: Path, name: str, **kw) -> dict:
    ny, nx, ky, kx = stack.shape
    path = folder / f"{name}.h5"
    os.sync()  # start every measurement with no earlier dirty pages being written back
    writer = FrameWriter(path, scan_shape=(ny, nx), frame_shape=(ky, kx), dtype=stack.dtype, **kw)
    t0 = time.perf_counter()
    writer.open()
    for y in range(ny):
        writer.submit(y * nx, stack[y])
    summary = writer.close()
    fsync_path(path)
    seconds = time.perf_counter() - t0
    size = path.stat().st_size
    path.chmod(0o644)
    path.unlink()
    return {
        "seconds": seconds,
        "frames_per_s": ny * nx / seconds,
        "MB_per_s": stack.nbytes / seconds / 1e6,
        "compression_ratio": stack.nbytes / summary.bytes_written,
        "file_bytes": size,
    }


def time_raw(nbytes: int, folder: Path) -> float:
    path = folder / "raw.bin"
    block = np.random.default_rng(1).integers(0, 255, 64 << 20, dtype=np.uint8)
    os.sync()
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        left = nbytes
        while left > 0:
            left -= os.write(fd, memoryview(block)[: min(left, block.nbytes)])
        os.fdatasync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - t0
    path.unlink()
    return nbytes / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ny", type=int, default=64)
    parser.add_argument("--nx", type=int, default=256)
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chunk-sweep", action="store_true", help="also time 1 frame and one full row per chunk"
    )
    args = parser.parse_args()

    stack = make_stack(args.ny, args.nx, args.k)
    print(f"stack {stack.shape} uint16, {stack.nbytes / 2**30:.2f} GiB, mean {stack.mean():.1f}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        # Warm-up: numba kernel compile/load and HDF5 plugin load, untimed.
        time_writer(stack[:1, :8], folder, "warm")
        time_writer(stack[:1, :8], folder, "warmz", compression="bitshuffle-lz4")
        # Interleaved repeats, medians: this VM's disk bandwidth drifts by 2x and more.
        raws, plains, lz4s = [], [], []
        for _ in range(args.repeats):
            raws.append(time_raw(stack.nbytes, folder))
            plains.append(time_writer(stack, folder, "plain"))
            lz4s.append(time_writer(stack, folder, "lz4", compression="bitshuffle-lz4"))
        raw = float(np.median(raws))
        plain = sorted(plains, key=lambda r: r["MB_per_s"])[len(plains) // 2]
        lz4 = sorted(lz4s, key=lambda r: r["MB_per_s"])[len(lz4s) // 2]
        sweep = {}
        if args.chunk_sweep:
            for frames in (1, 8, 32, args.nx):
                sweep[frames] = time_writer(stack, folder, f"c{frames}", chunk_frames=frames)
    print(
        f"raw disk (os.write + fdatasync): median {raw:.0f} MB/s of "
        f"{', '.join(f'{r:.0f}' for r in raws)}"
    )
    runs = ", ".join(f"{r['MB_per_s']:.0f}" for r in plains)
    print(f"fletcher32 direct runs: {runs} MB/s")
    for label, r in (("fletcher32 direct", plain), ("bitshuffle-lz4+fletcher32", lz4)):
        print(
            f"{label:28s} {r['frames_per_s']:9.0f} frames/s {r['MB_per_s']:7.0f} MB/s "
            f"compression {r['compression_ratio']:.2f}x"
        )
    for frames, r in sweep.items():
        print(f"  chunk = {frames:4d} frames: {r['MB_per_s']:7.0f} MB/s")
    print(
        json.dumps(
            {
                "shape": list(stack.shape),
                "plain_frames_per_s": round(plain["frames_per_s"]),
                "plain_MB_per_s": round(plain["MB_per_s"], 1),
                "lz4_frames_per_s": round(lz4["frames_per_s"]),
                "lz4_MB_per_s": round(lz4["MB_per_s"], 1),
                "lz4_compression_ratio": round(lz4["compression_ratio"], 2),
                "chunk_sweep_MB_per_s": {
                    str(k): round(v["MB_per_s"], 1) for k, v in sweep.items()
                },
                "baseline_raw_disk_MB_per_s": round(raw, 1),
                "repeats": args.repeats,
                "ratio": round(plain["MB_per_s"] / raw, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
