"""Counting noise: dose, Poisson statistics, seeding, block independence, saturation."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from bluestem.twin import DetectorModel, Optics, ScanGeometry, Twin, make_specimen
from bluestem.twin.noise import PLACEMENT_LIMIT

DET = DetectorModel(shape=(64, 64), pixel_size=55e-6, camera_length=0.055)
SCAN = ScanGeometry(shape=(40, 50), step=(0.3e-10, 0.3e-10))


def twin(specimen="vacuum", dose=500.0, seed=0, detector=DET, scan=SCAN):
    return Twin(
        Optics(cs=0.0), detector, scan, make_specimen(specimen), dose_per_frame=dose, seed=seed
    )


@pytest.mark.parametrize("dose", [500.0, 40_000.0])
def test_mean_counts_per_frame_is_the_dose(dose):
    # 500 e/frame takes the electron-placement path, 40 000 the per-pixel path.
    frames = twin(dose=dose).render(0, 2000)
    totals = frames.sum((1, 2), dtype=np.int64)
    assert abs(totals.mean() - dose) < 4 * math.sqrt(dose / len(totals))
    assert totals.var() == pytest.approx(dose, rel=0.15)


@pytest.mark.parametrize("dose", [2000.0, 12_000.0, 150_000.0])
def test_pixels_are_poisson_with_the_expected_mean(dose):
    # placement, per-pixel inversion (mean ~10 in the disk) and per-pixel PTRS (~120).
    tw = twin("srtio3", dose=dose)
    positions = np.zeros((1500, 2))
    frames = tw.render_at(positions, np.arange(1500)).astype(np.float64)
    mean = tw.expected((0.0, 0.0))
    bright = mean > 0.5
    got = frames.mean(0)[bright]
    z = (got - mean[bright]) / np.sqrt(mean[bright] / len(frames))
    assert np.abs(z).max() < 5.5
    assert abs(z.mean()) < 4 / math.sqrt(z.size)
    ratio = frames.var(0, ddof=1)[bright] / mean[bright]
    assert ratio.mean() == pytest.approx(1.0, abs=0.03)


def test_both_paths_are_exercised():
    pixels = DET.shape[0] * DET.shape[1]
    assert 2000.0 < PLACEMENT_LIMIT * pixels < 12_000.0


def test_same_seed_same_frames_other_seed_other_frames():
    a = twin(seed=7).render(100, 20)
    assert np.array_equal(a, twin(seed=7).render(100, 20))
    assert not np.array_equal(a, twin(seed=8).render(100, 20))
    # neighbouring frames are not copies of each other
    assert not np.array_equal(a[0], a[1])


@pytest.mark.parametrize("specimen", ["vacuum", "srtio3", "grains"])
def test_block_boundaries_do_not_matter(specimen):
    tw = twin(specimen, dose=3000.0)
    whole = tw.render(30, 70)
    parts = np.concatenate([tw.render(30, 1), tw.render(31, 22), tw.render(53, 47)])
    assert np.array_equal(whole, parts)
    fresh = twin(specimen, dose=3000.0)
    positions = SCAN.positions().reshape(-1, 2)
    picked = np.array([99, 30, 64])
    assert np.array_equal(fresh.render_at(positions[picked], picked), whole[picked - 30])


@pytest.mark.parametrize(
    ("depth", "dtype"), [(1, np.uint8), (6, np.uint8), (12, np.uint16), (24, np.uint32)]
)
def test_dtype_and_saturation(depth, dtype):
    det = DetectorModel(shape=(64, 64), pixel_size=55e-6, camera_length=0.055, counter_depth=depth)
    assert det.max_count == 2**depth - 1
    mean = twin(detector=det).expected((0, 0))
    disk = mean > 0.5 * mean.max()
    # well above the saturation count per disk pixel: every disk pixel saturates
    tw = twin(dose=max(4.0 * det.max_count, 40.0) * disk.sum(), detector=det)
    frames = tw.render(0, 4)
    assert frames.dtype == dtype
    assert np.all(frames[:, disk] == det.max_count)
    assert not frames[:, ~disk].any()


def test_saturation_on_the_electron_placement_path():
    det = DetectorModel(shape=(64, 64), pixel_size=55e-6, camera_length=0.055, counter_depth=1)
    frames = twin(dose=3000.0, detector=det).render(0, 50)  # ~2.4 e per disk pixel
    assert frames.dtype == np.uint8
    assert frames.max() == 1
    # P(count >= 1) = 1 - exp(-mean) per pixel
    mean = twin(dose=3000.0, detector=det).expected((0, 0))
    want = (1 - np.exp(-mean)).sum()
    assert frames.sum((1, 2)).mean() == pytest.approx(want, rel=0.02)


def test_binned_counts_are_poisson_of_the_binned_mean():
    det = DetectorModel(shape=(64, 64), pixel_size=55e-6, camera_length=0.055, binning=2)
    tw = twin(dose=1500.0, detector=det)
    frames = tw.render(0, 2000)
    assert frames.shape == (2000, 32, 32)
    mean = tw.expected((0, 0))
    bright = mean > 1
    assert np.allclose(frames.mean(0)[bright], mean[bright], rtol=0.1)
    assert frames.sum((1, 2)).mean() == pytest.approx(1500.0, abs=4 * math.sqrt(1500 / 2000))


def test_zero_dose_gives_empty_frames():
    assert not twin(dose=0.0).render(0, 10).any()


def test_concurrent_renders_match_serial():
    tw = twin("srtio3", dose=2000.0)
    serial = tw.render(0, SCAN.size)
    concurrent = twin("srtio3", dose=2000.0)
    out = {}

    def work(first, count):
        out[first] = concurrent.render(first, count)

    threads = [threading.Thread(target=work, args=(i * 500, 500)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(np.concatenate([out[i * 500] for i in range(4)]), serial)
