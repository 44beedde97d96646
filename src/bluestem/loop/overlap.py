"""Defocus C1 and two-fold astigmatism A1 from the phase of the double-disc overlaps of a
crystal (the Wigner-distribution-deconvolution / single-side-band aberration measurement).

Method
------
The 4D data Fourier-transformed over the scan, ``G(k, Q) = Σ_r w(r) I_k(r) e^{−2πi Q·r}``,
picks at a lattice frequency ``Q = g`` the interference of the beams that differ by g. For a
thin crystal (exit wave ``ψ(x − r) t(x)``, ``t = Σ_g T_g e^{2πi g·x}``) and the probe
``ψ(k) = A(k) e^{−iχ(k)}`` of the twin (``bluestem.twin.probe``)::

    G(k, Q) = Σ_g T_g T*_{g−Q} A(k − g) A(k − g + Q) e^{i[χ(k − g + Q) − χ(k − g)]}.

Inside the bright-field disc the first-order terms dominate: ``T_Q T*_0`` on the lens
``D(0) ∩ D(Q)`` with phase ``χ(θ) − χ(θ − λQ)`` and ``T_0 T*_{−Q}`` on ``D(0) ∩ D(−Q)``
with ``χ(θ + λQ) − χ(θ)`` (``θ = λk`` about the BF centre), each plus an unknown constant.
With ``χ = (π/λ)[θᵀMθ + C3 |θ|⁴ / 2]`` and M the parallax matrix of
:mod:`bluestem.loop.parallax` (``M = [[C1 + A1 cos 2φ, A1 sin 2φ], [A1 sin 2φ, C1 − A1 cos
2φ]]``, x-y order) the quadratic part of both phases is ``2π θ·(M Q) + const``: linear in
θ with the gradient ``2π M Q``, whatever the (unknown, even strong) structure factors. Two
non-parallel reflections fix the three parameters (C1, A1 cos 2φ, A1 sin 2φ).

The fit: the strongest peaks of ``Σ_k |G(k, q)|²`` (Hann-windowed scan, noise floor
removed) are the reflections, refined by direct DFTs; for each, the C3-compensated lenses'
2D FFT over the detector locates the phase slope (a coarse M by least squares); then all
reflections are fitted at once by weighted (Poisson) Gauss–Newton in (C1, a, b[, C3])
with the two complex constants of every reflection projected out. Pixels within
``margin`` of the edges of D(0) and D(±Q) are left out (edge ringing, partial pixels).

The scan must sample every frequency the BF disc carries (``|Q| < 2α/λ``): a step of at
most ``λ / (4α)`` (0.63 Å at 200 kV, 10 mrad); the detector must resolve the phase slope,
``δθ |M Q| < 1/2`` cycle per pixel (docs/loop.md, "Autofocus on a crystal").

References
----------
- J. M. Rodenburg, B. C. McCallum, P. D. Nellist, "Experimental tests on double-resolution
  coherent imaging via STEM", Ultramicroscopy 48, 304 (1993).
- T. J. Pennycook et al., "Efficient phase contrast imaging in STEM using a pixelated
  detector. Part 1", Ultramicroscopy 151, 160 (2015).
- H. Yang, T. J. Pennycook, P. D. Nellist, "Efficient phase contrast imaging in STEM using
  a pixelated detector. Part II: optimisation of imaging conditions", Ultramicroscopy 151,
  232 (2015); H. Yang et al., "Simultaneous atomic-resolution electron ptychography and
  Z-contrast imaging ...", Nat. Commun. 7, 12532 (2016): aberrations from the overlaps.
- A. R. Lupini, M. Chi, S. Jesse, J. Microsc. 263, 43 (2016).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bluestem.loop._overlap import (
    coarse_matrix,
    gauss_newton,
    lens_items,
    lens_model,
    phase_bases,
    read_bright_field,
    refine_peak,
    search_peaks,
)
from bluestem.loop.parallax_model import AberrationEstimate, shift_matrix

__all__ = ["OverlapFit", "fit_overlap", "overlap_phase"]


@dataclass
class OverlapFit(AberrationEstimate):
    """Aberrations fitted to the double-disc overlap phase (m, rad; twin convention).

    Attributes
    ----------
    c1, a1, a1_angle, sigma_c1, sigma_a1, sigma_a1_angle, c1_offset, c3
        As :class:`bluestem.loop.parallax.ParallaxFit` (``c1`` without ``c1_offset``).
    sigma_c3 : float
        One-sigma of a fitted C3 (0 when C3 was given).
    residual : float
        ``sqrt`` of the reduced χ² of the complex overlaps (1: the Poisson noise).
    explained : float
        Fraction of the overlaps' signal power (noise floor removed) the model explains.
    reliable : bool
        Converged, two non-parallel reflections, ``explained >= min_explained``, the phase
        slopes resolved by the detector and the refinement close to the coarse estimate.
    reflections : ndarray (n, 2)
        Lattice frequencies used (gy, gx) in the specimen (detector) frame, 1/m.
    snr : ndarray (n,)
        Their signal-to-noise ratio in ``Σ_k |G(k, g)|²``.
    explained_each : ndarray (n,)
        ``explained`` per reflection.
    n_pixels : int
        Detector pixels used, all reflections together.
    coarse : dict
        The slope search: M of each reflection's FFT peak and the combined estimate.
    iterations, converged
        Gauss–Newton steps; whether they settled.
    parameters : dict
        Method parameters, for the record.
    """

    c1: float
    a1: float
    a1_angle: float
    sigma_c1: float
    sigma_a1: float
    sigma_a1_angle: float
    residual: float
    explained: float
    reliable: bool
    c1_offset: float
    c3: float
    sigma_c3: float
    reflections: np.ndarray
    snr: np.ndarray
    explained_each: np.ndarray
    n_pixels: int
    iterations: int
    converged: bool
    coarse: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The scalars and parameters (JSON-able), for a document or the loop record."""
        keys = ("c1", "a1", "a1_angle", "sigma_c1", "sigma_a1", "sigma_a1_angle", "residual",
                "explained", "reliable", "c1_offset", "c3", "sigma_c3", "n_pixels",
                "iterations", "converged")  # fmt: skip
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["reflections"] = self.reflections.tolist()
        out["snr"] = self.snr.tolist()
        out["explained_each"] = self.explained_each.tolist()
        out["parameters"] = dict(self.parameters)
        return out


def overlap_phase(
    theta, q, wavelength: float, c1: float, a1: float = 0.0, a1_angle: float = 0.0,
    c3: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Aberration phase of the two overlaps of reflection ``q`` at detector angles ``theta``.

    Parameters
    ----------
    theta : array-like (..., 2)
        Angles (θy, θx) about the optical axis, rad.
    q : array-like (2,)
        Reflection (gy, gx) in the detector frame, 1/m.
    wavelength, c1, a1, a1_angle, c3 : float
        m, m, m, rad, m (the twin's convention, :func:`bluestem.twin.aberration_function`).

    Returns
    -------
    plus, minus : ndarray (...)
        ``χ(θ) − χ(θ − λq)`` (on the lens ``D(0) ∩ D(q)``) and ``χ(θ + λq) − χ(θ)``
        (on ``D(0) ∩ D(−q)``), rad.
    """
    th = np.asarray(theta, np.float64)
    qy, qx = (float(v) for v in q)
    p = np.array([c1, a1 * math.cos(2 * a1_angle), a1 * math.sin(2 * a1_angle), c3])
    plus, minus = phase_bases(th[..., 1], th[..., 0], (qx, qy), wavelength)
    return np.tensordot(p, plus, 1), np.tensordot(p, minus, 1)


def _lattice_hint(lattice):
    """(spacing, reflections) from ``lattice``: None, a spacing (m) or (n, 2) in 1/m."""
    if lattice is None:
        return None, None
    if np.ndim(lattice) == 0:
        d = math.nan if isinstance(lattice, bool) else float(lattice)
        if not (math.isfinite(d) and d > 0):
            raise ValueError(f"lattice {lattice!r}; allowed: None, a plane spacing > 0 m or "
                             "reflections (n, 2) in 1/m")  # fmt: skip
        return d, None
    g = np.asarray(lattice, np.float64)
    if g.ndim != 2 or g.shape[1] != 2 or len(g) < 2 or not np.all(np.isfinite(g)):
        raise ValueError(f"lattice of shape {g.shape}; allowed: None, a plane spacing > 0 m "
                         "or at least two reflections (n, 2) (gy, gx) in 1/m")  # fmt: skip
    return None, g


def _nonparallel(q: np.ndarray) -> bool:
    """Whether two of the vectors (n, 2) are more than 17° from parallel."""
    u = q / np.linalg.norm(q, axis=1, keepdims=True)
    return bool(np.any(np.abs(np.outer(u[:, 0], u[:, 1]) - np.outer(u[:, 1], u[:, 0])) > 0.3))


def _check(step, angle_per_pixel, wavelength, n_reflections, margin, min_snr, min_explained):
    dy, dx = (float(s) for s in step)
    if not (dy > 0 and dx > 0 and angle_per_pixel > 0 and wavelength and wavelength > 0):
        raise ValueError(f"step {step!r}, angle_per_pixel {angle_per_pixel!r}, wavelength "
                         f"{wavelength!r}; allowed: all > 0")  # fmt: skip
    if isinstance(n_reflections, bool) or not isinstance(n_reflections, int) or n_reflections < 2:
        raise ValueError(f"n_reflections {n_reflections!r}; allowed: an integer >= 2")
    if not (0 <= margin < 10 and min_snr > 0 and 0 <= min_explained <= 1):
        raise ValueError(f"margin {margin!r}, min_snr {min_snr!r}, min_explained "
                         f"{min_explained!r}; allowed: 0 <= margin < 10, min_snr > 0, "
                         "0 <= min_explained <= 1")  # fmt: skip
    return dy, dx


def _reflections(centred, var, shape, step, rotation, alpha, lam, app, spacing, given, opts):
    """The lattice frequencies (gy, gx) in the detector frame, their overlaps ``G(k, g)``
    (n, pixels) and each one's SNR."""
    (ny, nx), (dy, dx), (n_max, margin, min_snr) = shape, step, opts
    cos, sin = math.cos(rotation), math.sin(rotation)
    win = np.outer(np.hanning(ny + 2)[1:-1], np.hanning(nx + 2)[1:-1]).ravel()
    sy, sx = (
        g.ravel()
        for g in np.meshgrid(
            (np.arange(ny) - (ny - 1) / 2) * dy, (np.arange(nx) - (nx - 1) / 2) * dx, indexing="ij"
        )
    )

    def phases(qs):
        return np.exp(-2j * np.pi * (qs[:, :1] * sy + qs[:, 1:] * sx)) * win

    floor = (float(var.sum()), float(np.sqrt(np.sum(var * var))))  # noise of Σ_k |G|²
    if given is None:
        cube = centred.reshape(ny, nx, -1)
        spectrum = np.zeros((2 * ny, 2 * nx))
        for i in range(0, cube.shape[2], 256):  # bounded memory
            f = np.fft.fft2(cube[:, :, i : i + 256] * win.reshape(ny, nx, 1),
                            s=(2 * ny, 2 * nx), axes=(0, 1))  # fmt: skip
            spectrum += np.sum(f.real**2 + f.imag**2, axis=2)
        fy, fx = np.fft.fftfreq(2 * ny, d=dy), np.fft.fftfreq(2 * nx, d=dx)
        qq = np.hypot(fy[:, None], fx[None, :])
        keep = (fy[:, None] * ny * dy) ** 2 + (fx[None, :] * nx * dx) ** 2 >= 2.5**2  # off DC
        keep &= lam * qq <= 2 * alpha - 4 * margin * app  # a lens at least 4 margins wide
        if spacing is not None:
            keep &= np.abs(qq * spacing - 1) <= 0.1
        starts = search_peaks(spectrum, floor, (fy, fx), keep, n_max, min_snr)
    else:  # detector (specimen) frame -> scan frame: q_scan = R(−ρ) g
        starts = [(cos * g[0] - sin * g[1], cos * g[1] + sin * g[0]) for g in given]
    h = np.array([0.25 / (ny * dy), 0.25 / (nx * dx)])
    qs = np.array([refine_peak(q, phases, centred, h) for q in starts]).reshape(-1, 2)
    gq = phases(qs) @ centred
    snr = (np.sum(np.abs(gq) ** 2, axis=1) - floor[0]) / floor[1]
    refl = np.stack([sin * qs[:, 1] + cos * qs[:, 0], cos * qs[:, 1] - sin * qs[:, 0]], 1)
    good = snr >= min_snr
    if good.sum() < 2 or not _nonparallel(refl[good]):
        raise ValueError(
            f"{int(good.sum())} reflection(s) with SNR >= {min_snr} ({refl[good].tolist()} "
            "1/m): the overlap fit needs two non-parallel ones (a crystal on a zone axis, a "
            "scan step <= lambda / (4 alpha))"
        )
    return refl[good], gq[good], snr[good]


def fit_overlap(
    data,
    step: tuple[float, float],
    angle_per_pixel: float,
    *,
    wavelength: float,
    rotation: float = 0.0,
    c1_offset: float = 0.0,
    c3: float | None = 0.0,
    lattice=None,
    bf_center: tuple[float, float] | None = None,
    bf_radius: float | None = None,
    n_reflections: int = 4,
    margin: float = 2.0,
    min_snr: float = 10.0,
    max_iterations: int = 30,
    tolerance: float = 1e-12,
    min_explained: float = 0.8,
) -> OverlapFit:
    """Fit C1 and A1 (optionally C3) to the double-disc overlaps of one scan of a crystal.

    Parameters
    ----------
    data : array-like (ny, nx, ky, kx)
        The 4D dataset, or anything sliceable by scan rows (an h5py dataset).
    step : tuple of float
        Scan step (dy, dx), m.
    angle_per_pixel : float
        Detector angle per pixel, rad.
    wavelength : float
        Electron wavelength, m.
    rotation : float
        Scan rotation ρ, rad (as :func:`bluestem.loop.parallax.fit_parallax`).
    c1_offset : float
        Defocus deliberately added for this acquisition, m; ``c1`` is reported without it.
        No offset is needed: the overlaps have no blind zone at focus.
    c3 : float or None
        Known C3, m (its phase is part of the model); None fits it.
    lattice : None, float or array (n, 2)
        None: the ``n_reflections`` strongest peaks; a plane spacing d (m): the strongest
        with ``|g| d`` within 10 % of 1; reflections (gy, gx) in 1/m in the detector frame:
        the peaks refined near these.
    bf_center, bf_radius : optional
        BF disc centre (row, col) and radius (pixels); from the mean pattern if missing.
    n_reflections : int
        Reflections used at most (a Friedel pair counts once).
    margin : float
        Pixels left out on each side of the edges of D(0) and D(±g).
    min_snr : float
        Least signal-to-noise ratio of a reflection's overlap power ``Σ_k |G(k, g)|²``.
    max_iterations, tolerance
        Gauss–Newton steps at most; stop when C1 and A1 move less than ``tolerance`` m.
    min_explained : float
        ``explained`` below which the fit is not ``reliable``.

    Returns
    -------
    OverlapFit

    Raises
    ------
    ValueError
        A bad argument, or fewer than two non-parallel reflections above ``min_snr``.
    """
    dy, dx = _check(step, angle_per_pixel, wavelength, n_reflections, margin, min_snr,
                    min_explained)  # fmt: skip
    spacing, given = _lattice_hint(lattice)
    stack, centre, radius, pix = read_bright_field(data, bf_center, bf_radius, margin)
    ny, nx, ky, kx = data.shape
    app, lam = float(angle_per_pixel), float(wavelength)
    win = np.outer(np.hanning(ny + 2)[1:-1], np.hanning(nx + 2)[1:-1]).ravel()
    var = np.maximum((win * win) @ stack, 1.0)  # Poisson variance of G(k, q), any q
    stack -= stack.mean(axis=0)  # so that the (huge) DC leaks nowhere
    alpha = radius * app
    opts = (n_reflections, margin, min_snr)
    refl, gq, snr = _reflections(stack, var, (ny, nx), (dy, dx), rotation, alpha, lam, app,
                                 spacing, given, opts)  # fmt: skip
    del stack
    items = lens_items(gq, refl, var, pix, centre, radius, app, lam, margin)
    c3_known = 0.0 if c3 is None else float(c3)
    p0, slopes, resolved = coarse_matrix(items, refl, snr, app, c3_known, (ky, kx))
    start = np.append(p0, c3_known) if c3 is None else p0
    p, hess, converged, iterations = gauss_newton(items, start, c3_known, max_iterations,
                                                  tolerance)  # fmt: skip
    full = np.append(p[:3], p[3] if c3 is None else c3_known)
    if c3 is None:  # the coarse check at the fitted C3 (the slopes depend on it)
        p0, slopes, resolved = coarse_matrix(items, refl, snr, app, float(full[3]), (ky, kx))
    chi2, n_used, signal, each = 0.0, 0, 0.0, []
    for item in items:
        _, res, _, _ = lens_model(item, full, p.size)
        c = float(np.sum(item["w"] * (res.real**2 + res.imag**2)))
        total = float(np.sum(item["w"] * (item["g"].real ** 2 + item["g"].imag ** 2)))
        chi2, n_used, signal = chi2 + c, n_used + res.size, signal + total - res.size
        each.append(1.0 - (c - res.size) / max(total - res.size, 1e-300))
    # Complex residuals of variance ``var``: E[w |r|²] = 1 each, less the parameters (p and
    # two complex constants per reflection, counted as real halves).
    reduced = chi2 / max(1.0, n_used - (p.size + 4 * len(items)) / 2)
    explained = 1.0 - (chi2 - n_used) / max(signal, 1e-300)
    cov = np.linalg.pinv(2.0 * hess) * reduced  # Fisher matrix 2 Re JᴴWJ

    c1, a, b = (float(v) for v in p[:3])
    a1, angle = math.hypot(a, b), 0.5 * math.atan2(b, a)
    va, vb, vab = cov[1, 1], cov[2, 2], cov[1, 2]
    if a1 > 0:  # linear propagation; the angle's diverges as A1 -> 0
        var_a1 = (a * a * va + b * b * vb + 2 * a * b * vab) / a1**2
        var_phi = (b * b * va + a * a * vb - 2 * a * b * vab) / (4 * a1**4)
    else:
        var_a1, var_phi = 0.5 * (va + vb), math.inf
    m_fit = shift_matrix(c1, a1, angle)
    m_coarse = np.array([[p0[0] + p0[1], p0[2]], [p0[2], p0[0] - p0[1]]])
    agree = bool(np.linalg.norm(m_fit - m_coarse) <= 0.1 * np.linalg.norm(m_fit) + 10e-9)
    lattice_record = None if lattice is None else np.asarray(lattice, np.float64).tolist()
    parameters = {
        "step": (dy, dx), "angle_per_pixel": app, "rotation": float(rotation),
        "wavelength": lam, "bf_center": centre, "bf_radius": radius, "c3": c3,
        "lattice": lattice_record, "n_reflections": n_reflections, "margin": margin,
        "min_snr": min_snr, "max_iterations": max_iterations, "tolerance": tolerance,
        "min_explained": min_explained, "window": "hann",
    }  # fmt: skip
    return OverlapFit(
        c1=c1 - float(c1_offset),
        a1=a1,
        a1_angle=(angle + math.pi / 2) % math.pi - math.pi / 2,
        sigma_c1=math.sqrt(max(cov[0, 0], 0.0)),
        sigma_a1=math.sqrt(max(var_a1, 0.0)),
        sigma_a1_angle=math.sqrt(max(var_phi, 0.0)),
        residual=math.sqrt(reduced),
        explained=float(explained),
        reliable=bool(converged and explained >= min_explained and resolved <= 0.45 and agree),
        c1_offset=float(c1_offset),
        c3=float(full[3]),
        sigma_c3=math.sqrt(max(cov[3, 3], 0.0)) if c3 is None else 0.0,
        reflections=refl,
        snr=snr,
        explained_each=np.array(each),
        n_pixels=n_used,
        iterations=iterations,
        converged=converged,
        coarse={
            "c1": float(p0[0]),
            "a1_cos": float(p0[1]),
            "a1_sin": float(p0[2]),
            "slopes": slopes.tolist(),
            "resolved": resolved,
            "agree": agree,
        },
        parameters=parameters,
    )
