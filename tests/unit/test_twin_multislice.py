"""Multislice mode of the twin, each check against a computation written here.

The reference multislice below is plain numpy from the textbook recipe (Kirkland,
*Advanced Computing in Electron Microscopy*, ch. 6): ``psi <- IFFT(P FFT(t psi))`` with
``t = exp(i sigma V)`` and ``P = exp(-i pi lambda dz k**2)``, both band-limited to 2/3 of
the Nyquist frequency. It shares only the sampled slice potentials with the twin.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bluestem.twin import (
    DetectorModel,
    Multislice,
    Optics,
    ScanGeometry,
    SimulationGrid,
    SliceStack,
    Twin,
    make_specimen,
    pacbed_library,
)
from bluestem.twin.atoms import AtomField
from bluestem.twin.crystal import SRTIO3_LATTICE

A = SRTIO3_LATTICE
WAVELENGTH = SimulationGrid.from_setup(200e3, DetectorModel()).wavelength


def cell_detector(cells, pixels=64):
    """A detector whose real-space window is exactly ``cells`` SrTiO3 cells wide (no seam
    where the periodic window meets itself): ``lambda / theta_px = cells * a``."""
    return DetectorModel(
        shape=(pixels, pixels), pixel_size=55e-6, camera_length=cells * A * 55e-6 / WAVELENGTH
    )


# A 3-cell window: 64 pixels of 2.14 mrad (+-68 mrad), sampled at 0.18 A, so the Gaussian
# columns have no content beyond the detector (no aliasing in the phase object either).
DET = cell_detector(3)
# 19 mrad: no aperture pixel on the edge, where rounding decides whether it is in.
OPTICS = Optics(convergence_semi_angle=19e-3, cs=0.0)
# Plane-wave illumination of a 4-cell window: Bragg beams fall on pixels.
CELL_DET = cell_detector(4)
PLANE_WAVE = Optics(convergence_semi_angle=1e-6, cs=0.0)
SCAN = ScanGeometry(shape=(4, 4), step=(A / 8, A / 8))


def srtio3(**kw):
    return make_specimen("srtio3", multislice=True, **kw)


def fine_grid(det):
    """The reference's grid: the detector's dk, 1.5 times as many pixels."""
    g = SimulationGrid.from_setup(200e3, det)
    return SimulationGrid(tuple(3 * n // 2 for n in det.shape), g.wavelength, g.sigma, g.dk)


def reference_multislice(optics, det, stack, position, depths):
    """Diffraction frames (normalised to 1 over the detector) after ``depths`` slices."""
    g = fine_grid(det)
    m = g.shape[0]
    d = 1.0 / (m * g.dk)
    k = np.fft.fftfreq(m, d)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    limit = k2 <= ((2.0 / 3.0) * (0.5 / d)) ** 2 * (1 + 1e-12)
    prop = np.where(limit, np.exp(-1j * np.pi * g.wavelength * stack.thickness * k2), 0)
    aperture = g.wavelength * np.sqrt(k2) <= optics.convergence_semi_angle
    chi = np.pi * g.wavelength * optics.defocus * k2
    psi = np.fft.fftshift(np.fft.ifft2(aperture * np.exp(-1j * chi)))
    psi /= np.sqrt((np.abs(psi) ** 2).sum())
    y, x = np.array([position[0]]), np.array([position[1]])
    ts = []
    for f in stack.fields:
        t = np.exp(1j * g.sigma * f.potential(y, x, g)[0])
        ts.append(np.fft.ifft2(np.fft.fft2(t) * limit))
    frames = {}
    n = det.shape[0]
    for s in range(max(depths)):
        wave_k = np.fft.fft2(ts[stack.sequence[s]] * psi) * prop
        psi = np.fft.ifft2(wave_k)
        if s + 1 in depths:
            inten = np.fft.fftshift(np.abs(wave_k) ** 2)
            crop = inten[m // 2 - n // 2 : m // 2 + n // 2, m // 2 - n // 2 : m // 2 + n // 2]
            frames[s + 1] = crop / inten.sum()
    return [frames[d] for d in depths]


def make_twin(specimen, det=DET, optics=OPTICS, dose=1.0):
    return Twin(optics, det, SCAN, specimen, dose_per_frame=dose)


def test_default_is_the_phase_object():
    spec = make_specimen("srtio3")
    assert spec.multislice is False
    assert spec.parameters()["multislice"] is False
    assert make_twin(spec)._multislice is None
    params = srtio3().parameters()
    assert params["multislice"] is True and params["slices_per_cell"] == 2
    assert "atoms" not in params  # cached properties are not parameters


def test_one_thin_slice_is_the_phase_object():
    # One slice of the projected cell (1 cell thick) against the phase-object twin.
    pos = (5 * A / 32, 11 * A / 32)
    ms = make_twin(srtio3(thickness=A, slices_per_cell=1))
    assert ms.specimen.slice_stack().slices == 1
    phase = make_twin(make_specimen("srtio3", thickness=A)).expected(pos)
    multi = ms.expected(pos)
    assert np.abs(multi - phase).max() <= 1e-6 * phase.max()
    # ... and against the reference phase object on the fine grid.
    (ref,) = reference_multislice(OPTICS, DET, ms.specimen.slice_stack(), pos, [1])
    np.testing.assert_allclose(multi, ref, rtol=0, atol=1e-12 * ref.max())


def vacuum_stack(slices, dz, tilt=(0.0, 0.0)):
    empty = AtomField.build((A, A), [], [], [], 0.35e-10)
    return SliceStack.periodic([empty], slices, dz, tilt)


@pytest.mark.parametrize("tilt_pixels", [(0, 0), (-2, 3)])
def test_vacuum_propagation_is_the_analytic_fresnel_wave(tilt_pixels):
    grid = SimulationGrid.from_setup(200e3, DET)
    dz, slices = 2e-10, 25
    z = dz * slices
    g = fine_grid(DET)
    d = 1.0 / (g.shape[0] * g.dk)
    tilt = tuple(float(np.arctan(p * d / z)) for p in tilt_pixels)
    engine = Multislice(OPTICS, grid, vacuum_stack(slices, dz, tilt))
    exit_wave = engine.exit_waves([0.0], [0.0])[0]
    # Analytic: the probe of the aperture propagated over z is the probe defocused by z,
    # and a tilt moves it by z tan(theta).
    k = np.fft.fftfreq(g.shape[0], d)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    aperture = g.wavelength * np.sqrt(k2) <= OPTICS.convergence_semi_angle
    focused = np.fft.fftshift(np.fft.ifft2(aperture))
    focused /= np.sqrt((np.abs(focused) ** 2).sum())
    fresnel = np.exp(-1j * np.pi * g.wavelength * z * k2)
    defocused = np.fft.fftshift(np.fft.ifft2(aperture * fresnel))
    defocused /= np.sqrt((np.abs(defocused) ** 2).sum())
    expected = np.roll(defocused, tilt_pixels, axis=(0, 1))
    assert (np.abs(exit_wave) ** 2).sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(exit_wave, expected, rtol=0, atol=1e-10)
    # |psi(k)|**2 is that of the incident probe at every depth.
    inten = engine.diffraction([0.0], [0.0], [1, slices])[0]
    incident = np.abs(np.fft.fft2(np.fft.ifftshift(focused))) ** 2
    np.testing.assert_allclose(
        inten, np.broadcast_to(incident, inten.shape), rtol=0, atol=1e-10 * incident.max()
    )


def test_intensity_is_conserved_slice_by_slice():
    stack = srtio3(thickness=10e-9).slice_stack()
    engine = Multislice(OPTICS, SimulationGrid.from_setup(200e3, DET), stack)
    depths = np.arange(1, stack.slices + 1)
    inten = engine.diffraction([0.0, A / 4], [0.0, A / 8], depths)
    totals = inten.sum(axis=(2, 3)) / (engine.grid.shape[0] * engine.grid.shape[1])
    steps = np.diff(np.concatenate([np.ones((2, 1)), totals], axis=1), axis=1)
    assert np.abs(steps).max() <= 1e-6
    assert stack.slices == 51 and totals.min() > 1 - 1e-6


def test_zero_order_beam_thickness_dependence_matches_numpy():
    spec = srtio3()
    thicknesses = np.array([2, 10, 20, 40, 60]) * A / 2
    lib = pacbed_library(PLANE_WAVE, CELL_DET, spec, thicknesses, positions=np.zeros((1, 2)))
    slices = [int(n) for n in lib.parameters()["slices"]]
    assert slices == [2, 10, 20, 40, 60]
    stack = spec.slice_stack(thicknesses.max())
    refs = reference_multislice(PLANE_WAVE, CELL_DET, stack, (0.0, 0.0), slices)
    zero_order = lib.patterns[:, 32, 32]
    reference = np.array([r[32, 32] / r.sum() for r in refs])
    np.testing.assert_allclose(zero_order, reference, rtol=1e-9)
    # Dynamical scattering: the direct beam loses (and regains) intensity with thickness.
    assert zero_order[0] > 0.9 and zero_order.min() < 0.6


@pytest.mark.parametrize("thickness", [3 * A, 12 * A])
def test_convergent_frames_match_numpy(thickness):
    pos = (5 * A / 32, 11 * A / 32)
    tw = make_twin(srtio3(thickness=thickness))
    stack = tw.specimen.slice_stack()
    (ref,) = reference_multislice(OPTICS, DET, stack, pos, [stack.slices])
    np.testing.assert_allclose(tw.expected(pos), ref, rtol=0, atol=1e-10 * ref.max())


def test_pacbed_is_the_mean_of_twin_frames_and_changes_with_thickness():
    thicknesses = [4 * A, 10 * A]
    lib = pacbed_library(OPTICS, DET, srtio3(), thicknesses, positions=2)
    assert lib.patterns.shape == (2, 64, 64)
    assert lib.positions.shape == (4, 2)
    for t, pattern in zip(thicknesses, lib.patterns, strict=True):
        tw = make_twin(srtio3(thickness=t))
        mean = np.mean([tw.expected(p) for p in lib.positions], axis=0)
        np.testing.assert_allclose(pattern, mean / mean.sum(), rtol=0, atol=1e-12)
    assert lib.patterns.sum(axis=(1, 2)) == pytest.approx([1.0, 1.0])
    # ADF (beyond 2 alpha, about 16 pixels) grows with thickness.
    yy, xx = np.indices((64, 64)) - 32
    adf = np.hypot(yy, xx) > 16
    assert lib.patterns[1][adf].sum() > 1.2 * lib.patterns[0][adf].sum()
    record = lib.parameters()
    assert record["optics"]["convergence_semi_angle"] == 19e-3
    assert record["slice_thickness"] == pytest.approx(A / 2)
    assert record["slices"] == [8, 20] and len(record["positions"]) == 4
    assert record["angle_per_pixel"] == pytest.approx(DET.angle_per_pixel)


def test_binned_pacbed_is_the_binned_native_one():
    binned = DetectorModel(**{**DET.__dict__, "binning": 4})
    native = pacbed_library(OPTICS, DET, srtio3(), [4 * A], positions=1).patterns[0]
    lib = pacbed_library(OPTICS, binned, srtio3(), [4 * A], positions=1)
    np.testing.assert_allclose(
        lib.patterns[0], native.reshape(16, 4, 16, 4).sum(axis=(1, 3)), atol=1e-14
    )


def test_multislice_frames_repeat_with_the_lattice_and_render_in_threads():
    spec = srtio3(thickness=4 * A)
    pos = (A / 8, 3 * A / 8)
    fresh = make_twin(spec).expected((pos[0] + A, pos[1] - 2 * A))
    np.testing.assert_array_equal(fresh, make_twin(spec).expected(pos))
    tw = make_twin(spec, dose=500.0)
    serial = tw.render(0, 16)
    concurrent = make_twin(spec, dose=500.0)
    out = [None, None]

    def work(i):
        out[i] = concurrent.render(8 * i, 8)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(np.concatenate(out), serial)
    assert concurrent.cache_info["entries"] == 16


@pytest.mark.parametrize(
    ("name", "kw"),
    [("grains", {"thickness": 1.6e-9}), ("nanoparticles", {"particles": 1, "field": 4e-9,
                                                           "radius": (1e-9, 1e-9)})],
)  # fmt: skip
def test_grains_and_nanoparticles_have_a_multislice_mode(name, kw):
    phase = make_twin(make_specimen(name, **kw), dose=1000.0)
    multi = make_twin(make_specimen(name, multislice=True, **kw), dose=1000.0)
    a, b = phase.expected((0.0, 0.0)), multi.expected((0.0, 0.0))
    assert b.sum() == pytest.approx(1000.0, rel=1e-3)
    assert 1e-4 < np.abs(a - b).sum() / 1000.0 < 0.5


def test_bad_multislice_parameters_are_rejected():
    with pytest.raises(ValueError, match=r"tilt.*multislice=True"):
        make_specimen("srtio3", tilt=(1e-3, 0.0))
    with pytest.raises(ValueError, match="slices_per_cell"):
        srtio3(slices_per_cell=3)
    with pytest.raises(ValueError, match="multislice must be"):
        make_specimen("srtio3", multislice="yes")
    with pytest.raises(ValueError, match="no multislice"):
        make_specimen("vacuum").slice_stack()
    with pytest.raises(ValueError, match="set by the particles"):
        make_specimen("nanoparticles").slice_stack(5e-9)
    with pytest.raises(ValueError, match="periodic crystal"):
        pacbed_library(OPTICS, DET, make_specimen("grains"), [1e-9], positions=4)
    with pytest.raises(ValueError, match="band limit"):
        make_twin(srtio3(), optics=Optics(convergence_semi_angle=90e-3))
    with pytest.raises(ValueError, match="thicknesses"):
        pacbed_library(OPTICS, DET, srtio3(), [-1e-9])
    engine = Multislice(OPTICS, SimulationGrid.from_setup(200e3, DET), srtio3().slice_stack())
    with pytest.raises(ValueError, match="depths"):
        engine.diffraction([0.0], [0.0], [0])
