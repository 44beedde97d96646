"""Physics of the twin against the textbook formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bluestem.twin import (
    DetectorModel,
    Optics,
    ScanGeometry,
    SimulationGrid,
    Twin,
    electron_wavelength,
    interaction_constant,
    make_specimen,
)
from bluestem.twin.wavelength import ELECTRON_MASS, ELEMENTARY_CHARGE, SPEED_OF_LIGHT

# 64 native pixels of 1 mrad each: a 20 mrad aperture is a disk of radius 20 pixels.
DET = DetectorModel(shape=(64, 64), pixel_size=55e-6, camera_length=0.055)
OPTICS = Optics(convergence_semi_angle=20e-3, cs=0.0)
SCAN = ScanGeometry(shape=(8, 8), step=(0.5e-10, 0.5e-10))


def twin(specimen="vacuum", dose=1000.0, detector=DET, scan=SCAN, **kw):
    spec = make_specimen(specimen, **kw) if isinstance(specimen, str) else specimen
    return Twin(OPTICS, detector, scan, spec, dose_per_frame=dose)


@pytest.mark.parametrize(("kv", "pm"), [(80e3, 4.1757), (200e3, 2.5079), (300e3, 1.9687)])
def test_relativistic_wavelength(kv, pm):
    assert electron_wavelength(kv) * 1e12 == pytest.approx(pm, abs=1e-4)


@pytest.mark.parametrize("kv", [80e3, 200e3, 300e3])
def test_interaction_constant_matches_closed_form(kv):
    lam = electron_wavelength(kv)
    rest = ELECTRON_MASS * SPEED_OF_LIGHT**2
    energy = ELEMENTARY_CHARGE * kv
    closed = 2 * math.pi / (lam * kv) * (rest + energy) / (2 * rest + energy)
    assert interaction_constant(kv) == pytest.approx(closed, rel=1e-12)


def test_interaction_constant_kirkland_200kv():
    # Kirkland, Advanced Computing in Electron Microscopy: sigma(200 kV) = 0.7288 rad/(kV A)
    # = 7.288e-4 rad/(V A) = 7.29e6 rad/(V m).
    assert interaction_constant(200e3) == pytest.approx(7.29e6, rel=2e-3)


def test_wavelength_rejects_bad_voltage():
    with pytest.raises(ValueError, match="-5"):
        electron_wavelength(-5)


def test_grid_is_tied_to_detector():
    grid = SimulationGrid.from_setup(200e3, DET)
    theta = DET.pixel_size / DET.camera_length
    assert grid.dk == pytest.approx(theta / electron_wavelength(200e3))
    assert grid.sampling[0] == pytest.approx(1 / (64 * grid.dk))
    assert grid.extent == pytest.approx(64 * grid.sampling[1])


def test_vacuum_is_a_uniform_disk_of_radius_alpha_over_theta():
    frame = twin().expected((0.0, 0.0))
    radius = OPTICS.convergence_semi_angle / DET.angle_per_pixel
    area = np.count_nonzero(frame > 0.5 * frame.max())
    assert math.sqrt(area / math.pi) == pytest.approx(radius, abs=1.0)
    yy, xx = np.indices(frame.shape) - 32
    inside = frame[np.hypot(yy, xx) < radius - 2]
    assert inside.std() / inside.mean() < 1e-6
    assert frame.sum() == pytest.approx(1000.0, rel=1e-9)
    # centred on pixel (N // 2, N // 2)
    com = [(frame * g).sum() / frame.sum() for g in (yy, xx)]
    assert np.allclose(com, 0.0, atol=1e-6)


def com(frames):
    frames = np.asarray(frames, np.float64)
    yy, xx = np.indices(frames.shape[-2:]) - np.array(frames.shape[-2:])[:, None, None] // 2
    total = frames.sum((-2, -1))
    return (
        np.stack([(frames * yy).sum((-2, -1)), (frames * xx).sum((-2, -1))], -1) / total[..., None]
    )


def test_phase_ramp_shifts_centre_of_mass_by_beta_over_theta():
    beta = (3.3e-3, -1.7e-3)
    tw = twin("phase-ramp", deflection=beta)
    want = np.array(beta) / DET.angle_per_pixel
    got = com(tw.expected((1e-10, -2e-10)))
    assert np.allclose(got, want, atol=0.02)


def test_phase_ramp_noisy_centre_of_mass_within_statistics():
    beta = (2.2e-3, 1.1e-3)
    tw = twin("phase-ramp", dose=300.0, scan=ScanGeometry(shape=(40, 50)), deflection=beta)
    coms = com(tw.render(0, 2000))
    want = np.array(beta) / DET.angle_per_pixel
    err = coms.std(0) / math.sqrt(len(coms))
    assert np.all(np.abs(coms.mean(0) - want) < 4 * err)


def test_binning_conserves_the_noiseless_frame():
    native = twin("srtio3").expected((0.3e-10, 0.7e-10))
    binned = twin("srtio3", detector=DetectorModel(**{**DET.__dict__, "binning": 4}))
    frame = binned.expected((0.3e-10, 0.7e-10))
    assert frame.shape == (16, 16)
    assert np.allclose(frame, native.reshape(16, 4, 16, 4).sum((1, 3)), rtol=1e-12)
    assert frame.sum() == pytest.approx(native.sum(), rel=1e-12)


def test_srtio3_frames_repeat_with_the_lattice():
    tw = twin("srtio3")
    a = tw.specimen.lattice
    r = np.array([0.41e-10, 1.13e-10])
    base = tw.expected(r)
    assert not np.allclose(base, tw.expected(r + np.array([0.5 * a, 0.0])))
    for shift in ([a, 0.0], [0.0, a], [-2 * a, 3 * a]):
        assert np.array_equal(base, tw.expected(r + np.array(shift)))


def test_srtio3_potential_is_periodic_before_quantisation():
    spec = make_specimen("srtio3")
    grid = SimulationGrid.from_setup(200e3, DET)
    a = spec.lattice
    t0 = spec.transmission(np.array([0.123e-10]), np.array([0.456e-10]), grid)
    t1 = spec.transmission(np.array([0.123e-10 + a]), np.array([0.456e-10 - a]), grid)
    assert np.allclose(t0, t1, atol=1e-9)


def test_srtio3_column_phase_is_realistic():
    spec = make_specimen("srtio3")
    sigma = interaction_constant(200e3)
    assert 0.5 <= spec.atoms.peak_phase(sigma) <= 1.0
    # Sampled on a fine grid, the Sr column (at the window centre) peaks there too.
    grid = SimulationGrid.from_setup(200e3, DetectorModel(shape=(256, 256)))
    phase = spec.atoms.potential(np.zeros(1), np.zeros(1), grid)[0] * sigma
    assert 0.5 <= phase[128, 128] <= 1.0
    assert phase[128, 128] == pytest.approx(phase.max(), rel=0.05)


def test_cache_returns_what_a_fresh_twin_computes():
    scan = ScanGeometry(shape=(16, 16), step=(0.37e-10, 0.41e-10))
    warm = twin("srtio3", scan=scan)
    frames = warm.render(0, scan.size)
    assert warm.cache_info["entries"] > 1
    assert np.array_equal(warm.render(0, scan.size), frames)
    assert warm.cache_info["hits"] == warm.cache_info["entries"]
    fresh = twin("srtio3", scan=scan)
    position = scan.positions().reshape(-1, 2)[200]
    assert np.array_equal(warm.expected(position), fresh.expected(position))
    assert np.array_equal(fresh.render(200, 1)[0], frames[200])


def test_frame_total_is_the_dose_for_a_phase_object():
    tw = twin("srtio3", dose=1234.0)
    assert tw.expected((0.2e-10, 0.9e-10)).sum() == pytest.approx(1234.0, rel=1e-9)


def test_nanoparticle_scatters_more_outside_the_bright_field_disk():
    spec = make_specimen("nanoparticles", particles=1, radius=(2e-9, 2e-9), field=10e-9)
    tw = twin(spec)
    centre = spec.layout[0][0]
    radius = OPTICS.convergence_semi_angle / DET.angle_per_pixel
    yy, xx = np.indices((64, 64)) - 32
    dark = np.hypot(yy, xx) > radius + 2

    def adf(r):
        return tw.expected(r)[dark].sum()

    assert adf(centre) > 3 * adf(centre + np.array([4.9e-9, 4.9e-9]))


def test_grains_have_distinct_orientations_and_a_strained_grain():
    spec = make_specimen("grains", grains=3, field=6e-9, strain=0.03)
    seeds, angles = spec.layout
    assert len(set(np.round(angles, 6))) == 3
    labels = spec.grain_of(seeds[:, 0], seeds[:, 1])
    assert list(labels) == [0, 1, 2]
    tw = twin(spec)
    assert tw.expected(seeds[0]).sum() == pytest.approx(1000.0, rel=1e-9)
    assert spec.atoms.y.size > 0
