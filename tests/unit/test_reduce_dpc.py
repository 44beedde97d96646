"""COM and DPC against analytic phase objects and the physics twin."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bluestem.reduce import Reducer, ReductionSpec, ddpc, estimate_rotation, idpc, rotate_com
from bluestem.twin import DetectorModel, Optics, ScanGeometry, Twin, make_specimen

# As tests/unit/test_twin_physics.py: 64 pixels of 1 mrad, a 20 mrad aperture.
DET = DetectorModel(shape=(64, 64), pixel_size=55e-6, camera_length=0.055)
OPTICS = Optics(convergence_semi_angle=20e-3, cs=0.0)


def gaussian_phase(shape=(64, 72), bumps=12, seed=0):
    """phi = sum of positive Gaussian bumps, with its analytic gradient and Laplacian."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape, dtype=np.float64)
    phi, gy, gx, lap = (np.zeros(shape) for _ in range(4))
    for _ in range(bumps):
        y0, x0 = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8)
        s, a = rng.uniform(2.0, 4.0), rng.uniform(0.5, 1.0)
        r2 = (yy - y0) ** 2 + (xx - x0) ** 2
        g = a * np.exp(-r2 / (2 * s * s))
        phi += g
        gy -= (yy - y0) / s**2 * g
        gx -= (xx - x0) / s**2 * g
        lap += g * (r2 / s**4 - 2 / s**2)
    return phi, gy, gx, lap


def to_detector(gy, gx, rotation_deg, flip):
    """Inverse of rotate_com: the detector-frame COM whose scan-frame field is (gy, gx)."""
    a = math.radians(-rotation_deg)
    c, s = math.cos(a), math.sin(a)
    dy, dx = s * gx + c * gy, c * gx - s * gy
    return (dx, dy) if flip else (dy, dx)


def pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_rotate_com_conventions():
    # +x rotated by 90 degrees points along +y; flip swaps the components first.
    sy, sx = rotate_com(np.zeros((2, 2)), np.ones((2, 2)), 90.0)
    assert np.allclose(sy, 1) and np.allclose(sx, 0, atol=1e-15)
    sy, sx = rotate_com(np.full((2, 2), 2.0), np.ones((2, 2)), 0.0, flip=True)
    assert np.allclose(sy, 1) and np.allclose(sx, 2)
    _, gy, gx, _ = gaussian_phase()
    for deg, flip in ((33.0, False), (-140.0, True)):
        back = rotate_com(*to_detector(gy, gx, deg, flip), deg, flip)
        assert np.allclose(back[0], gy) and np.allclose(back[1], gx)


@pytest.mark.parametrize(
    ("deg", "flip"), [(0.0, False), (37.0, False), (-120.0, True), (170.0, True), (95.0, False)]
)
def test_rotation_flip_and_phase_are_recovered(deg, flip):
    phi, gy, gx, lap = gaussian_phase()
    dy, dx = to_detector(gy, gx, deg, flip)
    got_deg, got_flip = estimate_rotation(dy, dx)
    assert got_flip is flip
    assert abs(math.remainder(got_deg - deg, 360.0)) < 1.0
    assert pearson(idpc(dy, dx, rotation_deg=deg, flip=flip), phi) >= 0.99
    assert pearson(ddpc(dy, dx, rotation_deg=deg, flip=flip), lap) >= 0.99


def test_idpc_is_mean_free_scaled_and_tolerates_nan():
    phi, gy, gx, _ = gaussian_phase()
    got = idpc(gy, gx)
    assert abs(got.mean()) < 1e-12
    # Steps scale the integral: the same field sampled at twice the step has twice the phase.
    assert np.allclose(idpc(gy / 2, gx / 2, step=(2.0, 2.0)), got, atol=1e-12)
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(got - (phi - phi.mean()))[inner].max() < 0.05 * phi.max()
    holes = gy.copy()
    holes[10:13, 20:24] = np.nan
    assert pearson(idpc(holes, gx), phi) >= 0.99
    assert np.isnan(ddpc(holes, gx)[11, 21])


def test_estimate_rotation_is_robust_to_noise():
    _, gy, gx, _ = gaussian_phase(seed=4)
    dy, dx = to_detector(gy, gx, 63.0, True)
    rng = np.random.default_rng(1)
    sigma = 0.1 * np.abs(gy).max()
    dy, dx = dy + rng.normal(0, sigma, dy.shape), dx + rng.normal(0, sigma, dy.shape)
    deg, flip = estimate_rotation(dy, dx)
    assert flip and abs(deg - 63.0) < 3.0


def test_dpc_bad_input_is_refused():
    a = np.zeros((8, 9))
    with pytest.raises(ValueError, match=r"com_y \(8, 9\) and com_x \(9, 8\)"):
        ddpc(a, a.T)
    with pytest.raises(ValueError, match="each side >= 2"):
        idpc(np.zeros((1, 9)), np.zeros((1, 9)))
    with pytest.raises(ValueError, match=r"step \(1\.0, 0\.0\); allowed: two finite steps > 0"):
        idpc(a, a, step=(1.0, 0.0))
    with pytest.raises(ValueError, match="regularization -1"):
        idpc(a, a, regularization=-1)
    with pytest.raises(ValueError, match="rotation_deg nan"):
        ddpc(a, a, rotation_deg=math.nan)
    with pytest.raises(ValueError, match="constant"):
        estimate_rotation(np.ones((8, 9)), np.ones((8, 9)))


def twin(specimen, scan, dose, **kw):
    return Twin(OPTICS, DET, scan, make_specimen(specimen, **kw), dose_per_frame=dose)


def test_twin_phase_ramp_gives_the_analytic_deflection():
    beta = (3.3e-3, -1.7e-3)  # rad
    scan = ScanGeometry(shape=(2, 3), step=(0.5e-10, 0.5e-10))
    tw = twin("phase-ramp", scan, 1000.0, deflection=beta)
    spec = ReductionSpec.default(DET.frame_shape, angle_per_pixel=DET.angle_per_pixel)
    frames = np.stack([tw.expected(p) for p in scan.positions().reshape(-1, 2)])
    red = Reducer(spec, scan.shape)
    red.add(0, frames.astype(np.float32))
    img = red.images()
    for i, axis in enumerate("yx"):
        assert np.allclose(img[f"com_{axis}"], beta[i] / DET.angle_per_pixel, atol=0.02)
        assert np.allclose(img[f"com_{axis}_mrad"], beta[i] * 1e3, atol=0.02)


def test_twin_phase_ramp_noisy_frames_within_statistics():
    beta = (2.2e-3, 1.1e-3)
    scan = ScanGeometry(shape=(40, 50))
    tw = twin("phase-ramp", scan, 300.0, deflection=beta)
    red = Reducer(ReductionSpec.default(DET.frame_shape, angle_per_pixel=DET.angle_per_pixel),
                  scan.shape)  # fmt: skip
    for first in range(0, scan.size, 500):
        red.add(first, tw.render(first, 500))
    img = red.images()
    for i, axis in enumerate("yx"):
        mrad = img[f"com_{axis}_mrad"].ravel()
        err = mrad.std() / math.sqrt(mrad.size)
        assert abs(mrad.mean() - beta[i] * 1e3) < 4 * err


@pytest.mark.parametrize("scan_rotation_deg", [0.0, 25.0, -70.0])
def test_twin_srtio3_scan_rotation_is_recovered(scan_rotation_deg):
    # A scan rotated by rho relative to the specimen (= detector) axes needs the detector
    # COM rotated by -rho into the scan frame; the columns' positive phase fixes the 180.
    a = 3.905e-10
    scan = ScanGeometry.from_fov(
        (32, 32), (2 * a, 2 * a), rotation=math.radians(scan_rotation_deg)
    )
    tw = twin("srtio3", scan, 1e6, thickness=0.8e-9)
    frames = np.stack([tw.expected(p) for p in scan.positions().reshape(-1, 2)])
    red = Reducer(ReductionSpec.default(DET.frame_shape), scan.shape)
    red.add(0, frames.astype(np.float32))
    img = red.images()
    deg, flip = estimate_rotation(img["com_y"], img["com_x"])
    assert not flip
    assert abs(math.remainder(deg + scan_rotation_deg, 360.0)) < 1.5


def test_rotation_fit_is_significant_for_a_phase_object_and_not_for_noise():
    """A gradient field determines its rotation; white noise does not, and the
    significance follows the Rayleigh law the fit assumes (mean sqrt(pi/2) = 1.25)."""
    from bluestem.reduce import rotation_fit

    _, gy, gx, _ = gaussian_phase()
    rng = np.random.default_rng(4)
    cy, cx = to_detector(gy, gx, 30.0, False)
    noisy = (cy + 0.02 * rng.normal(size=cy.shape), cx + 0.02 * rng.normal(size=cx.shape))
    fit = rotation_fit(*noisy)
    assert fit.rotation_deg == pytest.approx(30.0, abs=1.0) and fit.flip is False
    assert fit.significance > 10 and fit.problems() == []
    assert fit.neighbourhoods == cy.size
    noise = [rotation_fit(*rng.normal(size=(2, 64, 64))) for _ in range(60)]
    z = np.array([f.significance for f in noise])
    assert z.mean() == pytest.approx(math.sqrt(math.pi / 2), rel=0.2)
    poor = [f for f in noise if f.problems()]
    assert len(poor) >= 57  # noise is reported as poorly determined
    assert any("barely depends on the rotation" in p for p in poor[0].problems())


def test_rotation_fit_flags_an_aliased_field():
    """The same phase object sampled at every 8th position: too few, aliased samples."""
    from bluestem.reduce import rotation_fit

    _, gy, gx, _ = gaussian_phase(shape=(96, 96), bumps=40, seed=2)
    rng = np.random.default_rng(5)
    cy, cx = to_detector(gy, gx, -20.0, False)
    cy, cx = cy + 0.05 * rng.normal(size=cy.shape), cx + 0.05 * rng.normal(size=cx.shape)
    assert rotation_fit(cy, cx).problems() == []
    coarse = rotation_fit(cy[::8, ::8], cx[::8, ::8], step=(8.0, 8.0))
    assert coarse.problems(), coarse
