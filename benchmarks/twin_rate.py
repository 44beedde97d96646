"""Frames per second the physics twin supplies, against a naive per-frame numpy twin.

SrTiO3, uint16 (12-bit) frames of 64², 128², 256², blocks of one scan row (128 frames),
cache warm (warm-up reported separately). Low dose: 2000 e/frame (20 µs at ~16 pA); high
dose: a mean of 18 counts per pixel. Baseline (same run): FFT + Generator.poisson per
frame at 128². The last line is one JSON object; ratio = ours(128², low dose) / naive.

Run: .venv/bin/python benchmarks/twin_rate.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from bluestem.twin import DetectorModel, Optics, ScanGeometry, Twin, make_specimen

ALPHA = 20e-3
LOW_DOSE = 2000.0
HIGH_COUNTS_PER_PIXEL = 18.0
ROW = 128


def detector(n: int) -> DetectorModel:
    # The detector spans +-2.5 alpha whatever its size, so frames look alike.
    return DetectorModel(shape=(n, n), pixel_size=55e-6, camera_length=55e-6 * n / (5 * ALPHA))


def make(n: int, dose: float, rows: int) -> Twin:
    return Twin(
        Optics(convergence_semi_angle=ALPHA),
        detector(n),
        ScanGeometry(shape=(rows, ROW), step=(0.5e-10, 0.5e-10)),
        make_specimen("srtio3"),
        dose_per_frame=dose,
    )


def rate(tw: Twin, rows: int) -> float:
    t0 = time.perf_counter()
    for r in range(rows):
        tw.render(r * ROW, ROW)
    return rows * ROW / (time.perf_counter() - t0)


def naive_rate(n: int, dose: float, frames: int) -> float:
    """The obvious implementation: one transmission, FFT and Poisson draw per frame."""
    tw = make(n, dose, 1)
    grid, probe, spec = tw.grid, tw._probe, tw.specimen
    positions = tw.scan.positions().reshape(-1, 2)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in range(frames):
        y, x = positions[i % len(positions)]
        wave = np.fft.fft2(probe * spec.transmission(np.array([y]), np.array([x]), grid)[0])
        intensity = np.fft.fftshift(np.abs(wave) ** 2)
        intensity /= intensity.sum()
        counts = rng.poisson(dose * intensity)
        np.minimum(counts, 4095, out=counts).astype(np.uint16)
    return frames / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="scan rows timed per case")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, rows of {ROW} frames, {args.rows} rows per case")

    t0 = time.perf_counter()
    make(32, LOW_DOSE, 1).render(0, ROW)
    first_call = time.perf_counter() - t0
    print(f"first render (numba compile or on-disk cache load): {first_call:.2f} s")

    results: dict[str, dict[str, float]] = {}
    for n in (64, 128, 256):
        cases = {}
        for label, dose in (("low", LOW_DOSE), ("high", HIGH_COUNTS_PER_PIXEL * n * n)):
            tw = make(n, dose, args.rows)
            t0 = time.perf_counter()
            computed = tw.warm_up()
            warm = time.perf_counter() - t0
            fps = rate(tw, args.rows)
            cases[f"{label}_fps"] = round(fps, 1)
            cases[f"{label}_warmup_s"] = round(warm, 3)
            mbps = fps * n * n * 2 / 1e6
            print(
                f"{n:4d}² {label:4s} dose {dose:10.0f} e/frame: {fps:9.0f} frames/s "
                f"({mbps:7.1f} MB/s), warm-up {warm:6.2f} s for {computed} distinct frames"
            )
        results[str(n)] = cases

    naive = naive_rate(128, LOW_DOSE, 300)
    ours = results["128"]["low_fps"]
    print(f"baseline naive per-frame numpy 128² low dose: {naive:.0f} frames/s")
    print(f"ratio ours / naive (128², low dose): {ours / naive:.1f}")
    print(
        json.dumps(
            {
                "benchmark": "twin_rate",
                "frame_dtype": "uint16",
                "block": ROW,
                "first_render_s": round(first_call, 3),
                "fps": results,
                "baseline_naive_fps_128_low": round(naive, 1),
                "ratio": round(ours / naive, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
