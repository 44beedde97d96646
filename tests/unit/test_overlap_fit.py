"""Autofocus on a crystal by the double-disc overlap phase (bluestem.loop.overlap) against
known truth.

The twin renders SrTiO3 [001] (1.6 nm, phase object) at 200 kV, α = 10 mrad, C3 = 1.2 mm,
on 128² frames of 0.30 mrad (camera length 183 mm: BF radius 33 pixels, the twin's
window 8.3 nm holds the probe up to |C1| + A1 ≈ 300 nm), 32 × 32 scans of a/8 = 0.49 Å
steps (4 cells; a multiple of the twin's position quantum a/32, so the lattice is not
distorted), 1e4 electrons per frame.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bluestem.loop.overlap import fit_overlap, overlap_phase
from bluestem.twin import (
    DetectorModel,
    Optics,
    ScanGeometry,
    Twin,
    aberration_function,
    electron_wavelength,
    make_specimen,
)
from bluestem.twin.crystal import SRTIO3_LATTICE

NM = 1e-9
A = SRTIO3_LATTICE
ALPHA = 10e-3
CS = 1.2e-3
LAM = electron_wavelength(200e3)
DET = DetectorModel(shape=(128, 128), pixel_size=55e-6, camera_length=0.183)
APP = DET.angle_per_pixel
STEP = A / 8
SHAPE = (32, 32)
DOSE = 1e4


@pytest.fixture(scope="module")
def srtio3():
    return make_specimen("srtio3")


def render(specimen, c1, a1=0.0, angle=0.0, *, seed=0, step=(STEP, STEP), rotation=0.0,
           dose=DOSE, cs=CS):  # fmt: skip
    """A (32, 32, 128, 128) uint16 dataset from the twin."""
    optics = Optics(convergence_semi_angle=ALPHA, defocus=c1, astigmatism=a1,
                    astigmatism_angle=angle, cs=cs)  # fmt: skip
    scan = ScanGeometry(shape=SHAPE, step=step, rotation=rotation)
    twin = Twin(optics, DET, scan, specimen, dose_per_frame=dose, seed=seed)
    return twin.render(0, scan.size).reshape(*SHAPE, *DET.frame_shape)


def a1_error(fit, a1, angle) -> float:
    """|fitted − true| of the A1 vector (A1 cos 2φ, A1 sin 2φ)."""
    true = a1 * np.array([math.cos(2 * angle), math.sin(2 * angle)])
    return float(np.hypot(*(fit.a1_vector - true)))


# -- the phase model ---------------------------------------------------------------------
def test_overlap_phase_is_the_difference_of_the_twins_chi():
    """χ(θ) − χ(θ − λq) and χ(θ + λq) − χ(θ) from the twin's own aberration function."""
    optics = Optics(defocus=-83 * NM, astigmatism=27 * NM, astigmatism_angle=0.7, cs=CS)
    rng = np.random.default_rng(0)
    theta = rng.uniform(-10e-3, 10e-3, size=(50, 2))  # (θy, θx)
    q = np.array([1.3, -2.1]) / A  # (gy, gx)

    def chi(t):
        return aberration_function(t[:, 0] / LAM, t[:, 1] / LAM, LAM, optics)

    plus, minus = overlap_phase(theta, q, LAM, optics.defocus, optics.astigmatism,
                                optics.astigmatism_angle, CS)  # fmt: skip
    assert np.allclose(plus, chi(theta) - chi(theta - LAM * q), rtol=1e-9, atol=1e-9)
    assert np.allclose(minus, chi(theta + LAM * q) - chi(theta), rtol=1e-9, atol=1e-9)
    # without C3 the phase is linear in θ with the gradient 2π M q (x, y order)
    plus0, _ = overlap_phase(theta, q, LAM, -83 * NM, 27 * NM, 0.7)
    m = np.array([[-83 + 27 * math.cos(1.4), 27 * math.sin(1.4)],
                  [27 * math.sin(1.4), -83 - 27 * math.cos(1.4)]]) * NM  # fmt: skip
    slope = 2 * math.pi * (m @ q[::-1])  # (d/dθx, d/dθy)
    design = np.column_stack([theta[:, 1], theta[:, 0], np.ones(len(theta))])
    fitted = np.linalg.lstsq(design, plus0, rcond=None)[0]
    assert np.allclose(fitted[:2], slope, rtol=1e-9)


def synthetic(c1, a1, angle, rotation, step, *, shape=(20, 20), det=64, app=0.3e-3,
              alpha=6e-3, turn=0.3):  # fmt: skip
    """Noise-free 4D data of a weak-phase square lattice (spacing a, turned by ``turn``)
    computed from the twin's χ at exact (off-pixel) disc positions, independent of the
    twin's renderer: ``I(k, r) = |Σ_g T_g e^{2πi g·r} ψ(k − g)|²``."""
    optics = Optics(defocus=c1, astigmatism=a1, astigmatism_angle=angle, cs=CS)
    c, s = math.cos(turn), math.sin(turn)
    hk = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)]
    g = np.array([[(c * h - s * k) / A, (s * h + c * k) / A] for h, k in hk])  # (gx, gy)
    rng = np.random.default_rng(4)
    tg = np.concatenate([[1.0], 0.01j * np.exp(1j * rng.uniform(0, 6.3, len(hk) - 1))])
    tg[2::2] = -np.conj(tg[1::2])  # a real potential: T_-g = -conj(T_g) to first order
    sy = (np.arange(shape[0]) - (shape[0] - 1) / 2) * step[0]
    sx = (np.arange(shape[1]) - (shape[1] - 1) / 2) * step[1]
    syy, sxx = (v.ravel() for v in np.meshgrid(sy, sx, indexing="ij"))
    cr, sr = math.cos(rotation), math.sin(rotation)
    ry, rx = sr * sxx + cr * syy, cr * sxx - sr * syy
    kk = (np.arange(det) - det // 2) * app / LAM
    ky, kx = np.meshgrid(kk, kk, indexing="ij")
    wave = np.zeros((ry.size, det, det), complex)
    for (gx, gy), t in zip(g, tg, strict=True):
        qy, qx = ky - gy, kx - gx
        psi = (LAM * np.hypot(qy, qx) <= alpha) * np.exp(
            -1j * aberration_function(qy, qx, LAM, optics)
        )
        wave += (t * np.exp(2j * np.pi * (gx * rx + gy * ry)))[:, None, None] * psi
    return 1e3 * np.abs(wave.reshape(*shape, det, det)) ** 2


@pytest.mark.parametrize(
    ("c1", "a1", "angle", "rotation", "step"),
    [(150 * NM, 40 * NM, 0.6, 0.4, (0.9e-10, 0.8e-10)),
     (-120 * NM, 25 * NM, -1.1, -2.2, (0.8e-10, 0.8e-10))],
)  # fmt: skip
def test_synthetic_overlaps_recover_m(c1, a1, angle, rotation, step):
    """Rotation, unequal steps, a lattice off the scan axes and incommensurate with the
    field: M to 0.1 nm. (The model keeps the two first-order terms of each reflection; the
    diffracted-diffracted ones it leaves out bias M by about 7 nm × |T_g|: 0.35 nm with
    |T_g| = 0.05, 0.07 nm with the 0.01 here.)"""
    data = synthetic(c1, a1, angle, rotation, step)
    fit = fit_overlap(data, step, 0.3e-3, wavelength=LAM, rotation=rotation, c3=CS)
    true = np.array([[c1 + a1 * math.cos(2 * angle), a1 * math.sin(2 * angle)],
                     [a1 * math.sin(2 * angle), c1 - a1 * math.cos(2 * angle)]])  # fmt: skip
    assert np.linalg.norm(fit.matrix - true) <= 0.1 * NM
    assert fit.reliable and fit.converged and fit.explained > 0.99
    # the reflections are the lattice's, in the detector frame
    assert np.allclose(sorted(np.hypot(*fit.reflections.T) * A), [1, 1, 2**0.5, 2**0.5], atol=3e-3)


# -- the twin ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("c1", "a1", "angle", "rotation", "step"),
    [(-200 * NM, 50 * NM, 0.5, 0.0, (STEP, STEP)),
     (200 * NM, 50 * NM, 1.2, 0.0, (STEP, STEP)),
     (120 * NM, 25 * NM, -1.0, 0.5, (STEP, 3 * A / 32)),
     (-70 * NM, 30 * NM, 1.2, -2.0, (STEP, STEP)),
     (3 * NM, 1 * NM, 0.2, 0.0, (STEP, STEP)),
     (0.0, 0.0, 0.0, 0.0, (STEP, STEP))],
)  # fmt: skip
def test_srtio3_estimate_is_within_a_nanometre(srtio3, c1, a1, angle, rotation, step):
    """No blind zone at focus, no offset needed; the sign of C1, the angle of A1, the scan
    rotation and unequal steps come out right."""
    data = render(srtio3, c1, a1, angle, seed=1, step=step, rotation=rotation)
    fit = fit_overlap(data, step, APP, rotation=rotation, wavelength=LAM, c3=CS)
    assert fit.reliable and fit.converged
    assert abs(fit.c1 - c1) <= 1 * NM
    assert a1_error(fit, a1, angle) <= 1 * NM
    assert abs(fit.c1 - c1) <= 5 * fit.sigma_c1 + 0.5 * NM
    assert 0.9 < fit.residual < 1.2 and fit.explained > 0.95  # the Poisson noise: R ≈ 1
    assert len(fit.reflections) == 4  # {200} and {110}
    json.dumps(fit.summary())


def test_a_wrong_c3_is_not_reliable(srtio3):
    """The C3 phase is part of the model: told C3 = 0 for a 1.2 mm column, C1 reads 206 nm
    for 150 nm, and the residual (R ≈ 1.4, explained ≈ 0.7) gives it away."""
    fit = fit_overlap(render(srtio3, 150 * NM, seed=2), (STEP, STEP), APP, wavelength=LAM,
                      c3=0.0)  # fmt: skip
    assert not fit.reliable and fit.explained < 0.8 and fit.residual > 1.2


def test_c3_can_be_fitted(srtio3):
    fit = fit_overlap(render(srtio3, 80 * NM, 20 * NM, 0.4, seed=3), (STEP, STEP), APP,
                      wavelength=LAM, c3=None)  # fmt: skip
    assert fit.reliable and fit.c3 == pytest.approx(CS, rel=0.03)
    assert abs(fit.c1 - 80 * NM) <= 2 * NM and a1_error(fit, 20 * NM, 0.4) <= 1 * NM
    assert 0 < fit.sigma_c3 < 0.03 * CS


def test_a_lattice_spacing_or_reflections_select_the_peaks(srtio3):
    data = render(srtio3, -60 * NM, 15 * NM, 0.9, seed=4)
    d110 = A / math.sqrt(2)
    fit = fit_overlap(data, (STEP, STEP), APP, wavelength=LAM, c3=CS, lattice=d110)
    assert np.allclose(np.hypot(*fit.reflections.T) * d110, 1, atol=2e-3)
    assert len(fit.reflections) == 2 and fit.reliable
    assert abs(fit.c1 + 60 * NM) <= 1 * NM and a1_error(fit, 15 * NM, 0.9) <= 1 * NM
    given = np.array([[0.0, 2.0], [2.0, 0.0]]) / A * 1.01  # 1 % off: refined onto the peaks
    fit = fit_overlap(data, (STEP, STEP), APP, wavelength=LAM, c3=CS, lattice=given)
    assert np.allclose(np.abs(fit.reflections) * A, [[0, 2], [2, 0]], atol=5e-3)
    assert abs(fit.c1 + 60 * NM) <= 1 * NM


def test_amorphous_carbon_is_refused(srtio3):
    """No lattice, no overlaps: a ValueError that says so (use the parallax there)."""
    carbon = make_specimen("nanoparticles", particles=0, field=20 * NM)
    with pytest.raises(ValueError, match="two non-parallel"):
        fit_overlap(render(carbon, 50 * NM, seed=5), (STEP, STEP), APP, wavelength=LAM, c3=CS)


@pytest.mark.parametrize("seed", [21, 22, 23, 24])
def test_closed_loop_converges_in_five_iterations(srtio3, seed):
    """The ParallaxFocusAgent's recipe offline: measure at the setpoint (no offset),
    subtract the estimate (setpoints rounded to the PVs' 0.1 nm), stop once
    ``|C1| + σ`` and ``|A1| + σ`` are within 2 nm."""
    rng = np.random.default_rng(seed)
    c1 = rng.uniform(-200, 200) * NM
    a1, angle = rng.uniform(0, 50) * NM, rng.uniform(-math.pi / 2, math.pi / 2)
    a_vec = a1 * np.array([math.cos(2 * angle), math.sin(2 * angle)])
    for iteration in range(5):
        data = render(srtio3, c1, float(np.hypot(*a_vec)), 0.5 * math.atan2(a_vec[1], a_vec[0]),
                      seed=100 * seed + iteration)  # fmt: skip
        fit = fit_overlap(data, (STEP, STEP), APP, wavelength=LAM, c3=CS)
        if (
            fit.reliable
            and abs(fit.c1) + fit.sigma_c1 <= 2 * NM
            and fit.a1 + fit.sigma_a1 <= 2 * NM
        ):
            break
        if fit.reliable:
            c1 -= round(fit.c1 / NM, 1) * NM
            a_vec = a_vec - np.round(fit.a1_vector / NM, 1) * NM
    else:
        pytest.fail(f"not within tolerance after 5 measurements: C1 {c1 / NM:+.2f} nm")
    assert abs(c1) <= 2 * NM and np.hypot(*a_vec) <= 2 * NM


# -- data handling and arguments ---------------------------------------------------------
class RowReader:
    """A minimal h5py-like reader: shape and row slicing only."""

    def __init__(self, array):
        self.array, self.shape, self.reads = array, array.shape, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.array[key]


def test_a_reader_in_row_blocks_gives_the_array_fit(srtio3):
    data = render(srtio3, 40 * NM, seed=6)
    reader = RowReader(data)
    a = fit_overlap(data, (STEP, STEP), APP, wavelength=LAM, c3=CS)
    b = fit_overlap(reader, (STEP, STEP), APP, wavelength=LAM, c3=CS)
    assert reader.reads >= 2 and a.c1 == pytest.approx(b.c1, abs=1e-15)


@pytest.mark.parametrize(
    ("args", "kw", "words"),
    [(((0.0, 1e-10), APP), {}, "step (0.0, 1e-10)"),
     (((STEP, STEP), -1.0), {}, "angle_per_pixel -1.0"),
     (((STEP, STEP), APP), {"wavelength": 0.0}, "wavelength 0.0"),
     (((STEP, STEP), APP), {"n_reflections": 1}, "n_reflections 1"),
     (((STEP, STEP), APP), {"margin": -1.0}, "margin -1.0"),
     (((STEP, STEP), APP), {"min_explained": 2.0}, "min_explained 2.0"),
     (((STEP, STEP), APP), {"lattice": -3e-10}, "lattice -3e-10"),
     (((STEP, STEP), APP), {"lattice": [[1e9, 0.0]]}, "lattice of shape (1, 2)"),
     (((STEP, STEP), APP), {"bf_radius": 3.0, "bf_center": (64, 64)}, "at least 16")],
)  # fmt: skip
def test_bad_arguments_are_refused(args, kw, words):
    data = np.ones((4, 4, 128, 128), np.uint16)
    kw = {"wavelength": LAM, **kw}
    with pytest.raises(ValueError) as info:
        fit_overlap(data, *args, **kw)
    assert words in str(info.value) and "allowed" in str(info.value)
    with pytest.raises(ValueError, match="4-D"):
        fit_overlap(np.ones((4, 128, 128)), (STEP, STEP), APP, wavelength=LAM)


# -- the plan's arguments ----------------------------------------------------------------
class _Device:
    """Just the attributes autofocus checks (it sends no message while validating)."""

    def __init__(self, *attrs):
        for a in attrs:
            setattr(self, a, object())


@pytest.mark.parametrize(
    ("kw", "words"),
    [({"method": "tcbf"}, ["method='tcbf'", "'parallax' or 'overlap'"]),
     ({"method": None}, ["method=None"]),
     ({"method": "overlap", "lattice": 0.0}, ["lattice=0.0", "[0.05, 5]"]),
     ({"method": "overlap", "lattice": "cubic"}, ["lattice='cubic'"]),
     ({"lattice": 0.276}, ["lattice=0.276", "only with method='overlap'"]),
     ({"method": "overlap", "c1_offset": 3e-6}, ["c1_offset=3e-06", "[-2e-06, 2e-06]"]),
     ({"c1_offset": 0.0}, ["c1_offset=0.0", "5e-08 <= |c1_offset|"])],
)  # fmt: skip
def test_autofocus_refuses_a_bad_method_or_lattice_before_any_message(kw, words):
    from bluestem.plans.autofocus import autofocus

    mic = _Device("defocus", "astigmatism", "astigmatism_angle")
    with pytest.raises(ValueError) as info:
        next(autofocus(_Device("hdf", "cam"), _Device("geometry"), mic, **kw))
    for word in words:
        assert word in str(info.value)
