"""Autofocus by parallax (bluestem.loop.parallax) against known truth.

The twin renders amorphous carbon (the ``nanoparticles`` specimen with no particles, a
3 nm film) and SrTiO3 at 200 kV, α = 10 mrad, on a 64² detector (BF radius 24 pixels),
48 × 48 scans of 2.5 Å steps (12 nm field), 1e4 electrons per frame (12-bit counters).
The carbon's transmission is computed once for a 4 × 4 tile of windows and sliced (it is
the same function the specimen computes per window), so the loop tests can re-render.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bluestem.loop.parallax import (
    bin_bright_field,
    bright_field_disc,
    fit_parallax,
    fit_shift_matrix,
    shift_matrix,
)
from bluestem.twin import (
    DetectorModel,
    Optics,
    ScanGeometry,
    SimulationGrid,
    Specimen,
    Twin,
    aberration_function,
    electron_wavelength,
    make_specimen,
)
from bluestem.twin.specimen import quantise_to_grid

NM = 1e-9
ALPHA = 10e-3
BF_PIXELS = 24
APP = ALPHA / BF_PIXELS  # rad per detector pixel
LAM = electron_wavelength(200e3)
DET = DetectorModel(shape=(64, 64), pixel_size=55e-6, camera_length=55e-6 / APP)
GRID = SimulationGrid.from_setup(200e3, DET)
STEP = 2.5e-10
SHAPE = (48, 48)
DOSE = 1e4
OFFSET = 60 * NM  # deliberate defocus of the measurements near focus


class TiledSpecimen(Specimen):
    """Another specimen's transmission over a periodic tile of windows, sliced per
    position (positions quantised to the grid, as the atomic specimens do)."""

    name = "tiled"

    def __init__(self, inner: Specimen, grid: SimulationGrid, tiles: int = 4):
        n = grid.shape[0]
        dy, dx = grid.sampling
        centres = np.arange(tiles) * n + n // 2
        yy, xx = np.meshgrid(centres * dy, centres * dx, indexing="ij")
        windows = inner.transmission(yy.ravel(), xx.ravel(), grid)
        self.map = windows.reshape(tiles, tiles, n, n).transpose(0, 2, 1, 3)
        self.map = self.map.reshape(tiles * n, tiles * n)

    def canonical(self, y, x, grid):
        return quantise_to_grid(y, x, grid)

    def transmission(self, y, x, grid):
        dy, dx = grid.sampling
        n, size = grid.shape[0], self.map.shape[0]
        off = np.arange(n) - n // 2
        iy = (np.rint(np.asarray(y) / dy).astype(np.int64)[:, None] + off) % size
        ix = (np.rint(np.asarray(x) / dx).astype(np.int64)[:, None] + off) % size
        return self.map[iy[:, :, None], ix[:, None, :]]


@pytest.fixture(scope="module")
def carbon() -> Specimen:
    film = make_specimen("nanoparticles", particles=0, carbon_density=3e20, field=4 * GRID.extent)
    return TiledSpecimen(film, GRID)


def render(specimen, c1, a1=0.0, angle=0.0, *, seed=0, step=(STEP, STEP), rotation=0.0, dose=DOSE):
    """A (ny, nx, 64, 64) uint16 dataset from the twin."""
    optics = Optics(convergence_semi_angle=ALPHA, defocus=c1, astigmatism=a1,
                    astigmatism_angle=angle, cs=0.0)  # fmt: skip
    scan = ScanGeometry(shape=SHAPE, step=step, rotation=rotation)
    twin = Twin(optics, DET, scan, specimen, dose_per_frame=dose, seed=seed)
    return twin.render(0, scan.size).reshape(*SHAPE, *DET.frame_shape)


def a1_error(fit, a1, angle) -> float:
    """|fitted − true| of the A1 vector (A1 cos 2φ, A1 sin 2φ)."""
    true = a1 * np.array([math.cos(2 * angle), math.sin(2 * angle)])
    return float(np.hypot(*(fit.a1_vector - true)))


# -- conventions -------------------------------------------------------------------------
def test_shift_matrix_is_the_gradient_of_the_twins_chi():
    """∇_k chi / 2π = M θ (x, y order), θ = λ k, from the twin's own aberration function."""
    optics = Optics(defocus=-73 * NM, astigmatism=31 * NM, astigmatism_angle=0.4, cs=0.0)
    m = shift_matrix(optics.defocus, optics.astigmatism, optics.astigmatism_angle)
    rng = np.random.default_rng(0)
    k = rng.uniform(-4e9, 4e9, size=(20, 2))  # (ky, kx) 1/m
    h = 1e3
    for ky, kx in k:
        chi = lambda ky_, kx_: float(aberration_function(ky_, kx_, LAM, optics))  # noqa: E731
        gx = (chi(ky, kx + h) - chi(ky, kx - h)) / (2 * h) / (2 * math.pi)
        gy = (chi(ky + h, kx) - chi(ky - h, kx)) / (2 * h) / (2 * math.pi)
        assert np.allclose([gx, gy], m @ (LAM * np.array([kx, ky])), rtol=1e-6, atol=1e-15)


def test_fit_shift_matrix_recovers_known_parameters():
    rng = np.random.default_rng(1)
    theta = rng.uniform(-8e-3, 8e-3, size=(40, 2))
    c1, a1, angle, t, c3 = -120 * NM, 35 * NM, -0.7, np.array([0.2, -0.1]) * NM, 3e-6
    m = shift_matrix(c1, a1, angle)
    t2 = np.sum(theta**2, axis=1)
    disp_xy = -(theta[:, ::-1] @ m.T + t) - c3 * t2[:, None] * theta[:, ::-1]
    disp = disp_xy[:, ::-1]  # (y, x)
    params, cov, res = fit_shift_matrix(theta, disp, c3=c3)
    expected = [c1, a1 * math.cos(2 * angle), a1 * math.sin(2 * angle), *t]
    assert np.allclose(params, expected, rtol=1e-9, atol=1e-18)
    assert np.abs(res).max() < 1e-18 and cov.shape == (5, 5)
    params, _, _ = fit_shift_matrix(theta, disp, c3=None)
    assert np.allclose(params, [*expected, c3], rtol=1e-6, atol=1e-17)


def synthetic(m, rotation, step, *, shape=(40, 40), det=32, radius=12, app=0.4e-3):
    """BF pixel images I_θ(s) = 1 + 0.1 J(R s + M θ) of a smooth random J; dark field 0."""
    rng = np.random.default_rng(2)
    q = rng.uniform(-1.2e9, 1.2e9, size=(150, 2))  # (qy, qx) 1/m
    amp = np.exp(-np.sum(q**2, axis=1) / (2 * 0.6e9**2)) * np.exp(2j * np.pi * rng.random(150))
    sy = (np.arange(shape[0]) - (shape[0] - 1) / 2) * step[0]
    sx = (np.arange(shape[1]) - (shape[1] - 1) / 2) * step[1]
    syy, sxx = np.meshgrid(sy, sx, indexing="ij")
    c, s = math.cos(rotation), math.sin(rotation)
    y, x = s * sxx + c * syy, c * sxx - s * syy
    waves = amp[:, None] * np.exp(2j * np.pi * (np.outer(q[:, 0], y) + np.outer(q[:, 1], x)))
    r, col = np.mgrid[0:det, 0:det]
    inside = np.hypot(r - det // 2, col - det // 2) <= radius
    theta_xy = np.stack([col[inside] - det // 2, r[inside] - det // 2], axis=1) * app
    shift_xy = theta_xy @ m.T
    phases = np.exp(2j * np.pi * (shift_xy[:, 1:] * q[:, 0] + shift_xy[:, :1] * q[:, 1]))
    images = 100.0 * (1.0 + 0.1 * (phases @ waves).real)
    data = np.zeros((*shape, det, det))
    data[:, :, inside] = images.T.reshape(*shape, -1)
    return data


@pytest.mark.parametrize(
    ("c1", "a1", "angle", "rotation", "step"),
    [
        (150 * NM, 40 * NM, 0.6, 0.4, (2.5e-10, 2.5e-10)),
        (-120 * NM, 25 * NM, -1.1, -2.2, (2.5e-10, 2.0e-10)),
    ],
)
def test_pure_geometry_recovers_m(c1, a1, angle, rotation, step):
    m = shift_matrix(c1, a1, angle)
    fit = fit_parallax(synthetic(m, rotation, step), step, 0.4e-3, rotation=rotation,
                       edge=1.0, bin_size=2)  # fmt: skip
    assert np.linalg.norm(fit.matrix - m) <= 1e-3 * np.linalg.norm(m)
    assert fit.converged and fit.explained > 0.999
    assert 400 < fit.n_pixels <= 437  # the disc of radius 12, less partial edge bins


# -- the twin ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("c1", "a1", "angle", "rotation", "step"),
    [
        (-180 * NM, 40 * NM, 0.6, 0.0, (STEP, STEP)),
        (120 * NM, 25 * NM, -1.0, 0.5, (STEP, 2.0e-10)),
        (60 * NM, 0.0, 0.0, 0.0, (STEP, STEP)),
        (-70 * NM, 30 * NM, 1.2, -2.0, (STEP, STEP)),
    ],
)
def test_carbon_estimate_is_within_ten_percent(carbon, c1, a1, angle, rotation, step):
    data = render(carbon, c1, a1, angle, seed=1, step=step, rotation=rotation)
    fit = fit_parallax(data, step, APP, rotation=rotation, wavelength=LAM)
    assert fit.reliable
    assert abs(fit.c1 - c1) <= 0.1 * abs(c1) + 1 * NM
    assert a1_error(fit, a1, angle) <= 0.1 * a1 + 2 * NM  # sigma(A1) ~ 1 nm at this dose
    assert abs(fit.c1 - c1) < 5 * fit.sigma_c1 + 1 * NM
    json.dumps(fit.summary())


def test_near_focus_needs_and_takes_a_defocus_offset(carbon):
    c1, a1, angle = 1.5 * NM, 1.0 * NM, 0.3
    blind = fit_parallax(render(carbon, c1, a1, angle, seed=2), (STEP, STEP), APP,
                         wavelength=LAM)  # fmt: skip
    assert not blind.reliable  # no parallax at focus: the fit says so
    data = render(carbon, c1 + OFFSET, a1, angle, seed=3)
    fit = fit_parallax(data, (STEP, STEP), APP, wavelength=LAM, c1_offset=OFFSET)
    assert fit.reliable and fit.c1_offset == OFFSET
    assert abs(fit.c1 - c1) <= 2 * NM and a1_error(fit, a1, angle) <= 2 * NM


def test_the_false_parallax_near_focus_is_not_reliable(carbon):
    """At high dose the aperture-edge contrast near focus aligns into a confident,
    wrong-signed C1 (10 nm reads about -35 nm, R² 0.98); its parity gives it away."""
    fit = fit_parallax(render(carbon, 10 * NM, seed=1, dose=3e5), (STEP, STEP), APP,
                       wavelength=LAM)  # fmt: skip
    assert fit.explained > 0.9 and fit.parity > 0.5 and not fit.reliable
    good = fit_parallax(render(carbon, 60 * NM, seed=1, dose=3e5), (STEP, STEP), APP,
                        wavelength=LAM)  # fmt: skip
    assert good.reliable and abs(good.parity) < 0.1 and abs(good.c1 - 60 * NM) < 1 * NM


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_closed_loop_converges_in_five_iterations(carbon, seed):
    """Measure, subtract the estimate, repeat: the first measurement at the current
    focus, later ones (and any the fit calls unreliable) with the defocus offset."""
    rng = np.random.default_rng(seed)
    c1 = rng.uniform(-200, 200) * NM
    a1, angle = rng.uniform(0, 50) * NM, rng.uniform(-math.pi / 2, math.pi / 2)
    a_vec = a1 * np.array([math.cos(2 * angle), math.sin(2 * angle)])
    offset = 0.0
    for iteration in range(5):
        data = render(
            carbon,
            c1 + offset,
            float(np.hypot(*a_vec)),
            0.5 * math.atan2(a_vec[1], a_vec[0]),
            seed=100 * seed + iteration,
        )
        fit = fit_parallax(data, (STEP, STEP), APP, wavelength=LAM, c1_offset=offset)
        if fit.reliable:
            c1 -= fit.c1
            a_vec = a_vec - fit.a1_vector
            offset = OFFSET
            if iteration and abs(fit.c1) < 1 * NM and fit.a1 < 1 * NM:
                break
        else:
            offset = OFFSET if offset == 0 else -offset
    assert abs(c1) <= 2 * NM and np.hypot(*a_vec) <= 2 * NM


@pytest.mark.parametrize(("c1", "a1"), [(-150 * NM, 30 * NM), (100 * NM, 0.0)])
def test_srtio3_gives_a_coarse_estimate_only(c1, a1):
    """A crystal: only the central bins (both ±g(100) discs overlap them) and a band up
    to the lattice frequencies; the estimate is coarse (region-dependent fringe phases
    bias it by up to ~25 nm)."""
    step = 1e-10
    data = render(make_specimen("srtio3"), c1, a1, 0.3, seed=0, step=(step, step))
    fit = fit_parallax(data, (step, step), APP, wavelength=LAM, edge=0.35, bin_size=2,
                       band=(1 / (SHAPE[0] * step), 3e9))  # fmt: skip
    assert np.sign(fit.c1) == np.sign(c1)
    assert abs(fit.c1 - c1) <= 0.1 * abs(c1) + 20 * NM
    assert abs(fit.a1 - a1) <= 10 * NM


# -- data handling -----------------------------------------------------------------------
class RowReader:
    """A minimal h5py-like reader: shape and row slicing only."""

    def __init__(self, array):
        self.array, self.shape, self.reads = array, array.shape, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.array[key]


def test_bins_from_a_reader_in_row_blocks_equal_the_array():
    rng = np.random.default_rng(3)
    r, c = np.mgrid[0:32, 0:32]
    disc = (np.hypot(r - 15.5, c - 16.0) <= 10).astype(float)
    data = rng.poisson(50 * disc, size=(6, 5, 32, 32)).astype(np.uint16)
    cy, cx, radius = bright_field_disc(data.mean(axis=(0, 1)))
    assert (cy, cx) == pytest.approx((15.5, 16.0), abs=0.05)
    assert radius == pytest.approx(10.0, abs=0.3)
    whole = bin_bright_field(data, 1e-3, bin_size=3, edge=1.0)
    reader = RowReader(data)
    blocks = bin_bright_field(reader, 1e-3, bin_size=3, edge=1.0, rows=2)
    assert reader.reads == 6  # two passes (mean pattern, bins) of three blocks
    assert np.array_equal(whole.images, blocks.images)
    assert np.allclose(whole.theta, blocks.theta)
    assert 0.8 * math.pi * radius**2 < whole.n_pixels <= math.pi * (radius + 1) ** 2


def test_bad_input_is_rejected():
    data = np.ones((4, 4, 16, 16))
    with pytest.raises(ValueError, match="4-D"):
        bin_bright_field(np.ones((4, 16, 16)), 1e-3)
    with pytest.raises(ValueError, match="edge"):
        bin_bright_field(data, 1e-3, edge=1.5)
    with pytest.raises(ValueError, match="no bright field"):
        bright_field_disc(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="at least 4"):
        bin_bright_field(data, 1e-3, bf_radius=2.0, bf_center=(8.0, 8.0), bin_size=4)
    with pytest.raises(ValueError, match="step"):
        fit_parallax(data, (0.0, 1e-10), 1e-3)
