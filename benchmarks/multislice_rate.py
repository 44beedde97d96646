"""Frames per second of the multislice twin, against a naive per-position numpy multislice.

SrTiO3 [001] (atomic-plane slices, a / 2 = 1.95 Å), 200 kV, 20 mrad, detectors of 64² and
128² spanning +-2.5 alpha (multislice grids of 96² and 192²), 10 and 40 nm (51 and 205
slices). "cold": frames computed (distinct positions, a fresh twin each run: what a
first scan costs); "warm": blocks of 128 frames over those positions from the frame
cache (2000 e/frame, uint16). Baseline (same
run, same grid, potentials and propagator): one position at a time, ``psi =
ifft2(fft2(t psi) P)`` in numpy. Figures are medians of ``--repeats`` runs. Also times the
PACBED library (10 thicknesses up to 200 slices, 64², 8 x 8 positions over the cell).
The last line is one JSON object; ``ratio`` = ours (cold) / naive per case and overall
(the median of the per-case ratios).

Run: .venv/bin/python benchmarks/multislice_rate.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from bluestem.twin import (
    DetectorModel,
    Optics,
    ScanGeometry,
    Twin,
    make_specimen,
    pacbed_library,
)
from bluestem.twin.crystal import SRTIO3_LATTICE as A
from bluestem.twin.multislice import band_limit, fresnel_propagator

ALPHA = 20e-3
ROW = 128
OPTICS = Optics(convergence_semi_angle=ALPHA)


def detector(n: int) -> DetectorModel:
    # The detector spans +-2.5 alpha whatever its size (as in twin_rate.py).
    return DetectorModel(shape=(n, n), pixel_size=55e-6, camera_length=55e-6 * n / (5 * ALPHA))


def make(n: int, thickness: float, frames: int) -> Twin:
    """A fresh multislice twin whose first ``frames`` scan positions are distinct."""
    return Twin(
        OPTICS,
        detector(n),
        ScanGeometry(shape=(1, frames), step=(A / 32, A / 32)),
        make_specimen("srtio3", thickness=thickness, multislice=True),
        dose_per_frame=2000.0,
    )


def ours(n: int, thickness: float, frames: int) -> tuple[float, float]:
    """(cold, warm) frames/s: ``frames`` distinct positions, then blocks of 128 frames
    over the same positions from the cache."""
    tw = make(n, thickness, frames)
    t0 = time.perf_counter()
    tw.render(0, frames)
    cold = frames / (time.perf_counter() - t0)
    block = np.resize(tw.scan.positions().reshape(-1, 2), (ROW, 2))
    indices = np.arange(ROW)
    t0 = time.perf_counter()
    for _ in range(10):
        tw.render_at(block, indices)
    warm = 10 * ROW / (time.perf_counter() - t0)
    return cold, warm


def naive(n: int, thickness: float, frames: int) -> float:
    """Frames/s of the obvious implementation: one position at a time, plain numpy."""
    tw = make(n, thickness, frames)
    engine = tw._multislice  # its grid, probe and slices: the same physics
    grid, stack, probe = engine.grid, engine.stack, engine.probe
    limit = band_limit(grid)
    prop = fresnel_propagator(grid, stack.thickness)
    positions = tw.scan.positions().reshape(-1, 2)
    crop = slice(grid.shape[0] // 2 - n // 2, grid.shape[0] // 2 + n // 2)
    t0 = time.perf_counter()
    for y, x in positions[:frames]:
        ts = []
        for field in stack.fields:
            t = np.exp(1j * grid.sigma * field.potential(np.array([y]), np.array([x]), grid)[0])
            ts.append(np.fft.ifft2(np.fft.fft2(t) * limit))
        psi = probe
        for s in stack.sequence:
            wave_k = np.fft.fft2(ts[s] * psi) * prop
            psi = np.fft.ifft2(wave_k)
        inten = np.fft.fftshift(np.abs(wave_k) ** 2)
        frame = inten[crop, crop] / inten.sum()
    assert frame.shape == (n, n)
    return frames / (time.perf_counter() - t0)


def pacbed_seconds(repeats: int) -> tuple[float, dict]:
    spec = make_specimen("srtio3")
    thicknesses = np.arange(1, 11) * 20 * A / 2  # 20 .. 200 slices
    pacbed_library(OPTICS, detector(64), spec, thicknesses[:1], positions=1)  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        lib = pacbed_library(OPTICS, detector(64), spec, thicknesses, positions=8)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), lib.parameters()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, repeats: {args.repeats}")
    t0 = time.perf_counter()
    make(32, 1e-9, 1).render(0, 1)
    print(f"first render (numba compile or on-disk cache load): {time.perf_counter() - t0:.2f} s")

    cases: dict[str, dict[str, float]] = {}
    for n in (64, 128):
        for nm in (10, 40):
            thickness = nm * 1e-9
            frames = 32 if n == 64 else 16
            slow = 4 if nm == 40 else 8
            runs = [ours(n, thickness, frames) for _ in range(args.repeats)]
            cold = float(np.median([r[0] for r in runs]))
            warm = float(np.median([r[1] for r in runs]))
            base = float(np.median([naive(n, thickness, slow) for _ in range(args.repeats)]))
            slices = make_specimen("srtio3", thickness=thickness).slice_stack().slices
            key = f"{n}_{nm}nm"
            cases[key] = {
                "slices": slices,
                "cold_fps": round(cold, 2),
                "warm_fps": round(warm, 1),
                "naive_fps": round(base, 2),
                "ratio": round(cold / base, 2),
            }
            print(
                f"{n:4d}² {nm:3d} nm ({slices:3d} slices): cold {cold:8.2f} frames/s, "
                f"warm (cached) {warm:9.0f} frames/s, naive numpy {base:7.2f} frames/s, "
                f"ratio {cold / base:5.2f}"
            )
    seconds, record = pacbed_seconds(args.repeats)
    print(
        f"PACBED library: 10 thicknesses (up to {max(record['slices'])} slices), 64², "
        f"8 x 8 positions: {seconds:.2f} s"
    )
    ratio = float(np.median([c["ratio"] for c in cases.values()]))
    print(f"ratio ours (cold) / naive, median over the cases: {ratio:.2f}")
    print(
        json.dumps(
            {
                "benchmark": "multislice_rate",
                "cpus": os.cpu_count(),
                "fps": cases,
                "baseline": "naive per-position numpy multislice, same grid and slices",
                "pacbed_library_s": round(seconds, 3),
                "pacbed_library": {
                    "thicknesses": 10,
                    "detector": 64,
                    "positions": 64,
                    "max_slices": max(record["slices"]),
                },
                "ratio": round(ratio, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
