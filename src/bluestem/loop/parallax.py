"""Defocus C1 and two-fold astigmatism A1 from the parallax of tilt-corrected bright field.

Method
------
By reciprocity each bright-field (BF) detector pixel at angle **θ** records a tilted-beam
image. For a weak phase object and a quadratic aberration function (the twin's
convention, ``bluestem.twin.probe``: ``chi = (2π/λ) f(θ)``) that image is a common image
displaced by the gradient ``∇_θ f = M θ (+ C3 |θ|² θ)`` (exactly for a quadratic chi and
the frequencies ``q`` whose partners ``θ ± λq`` both lie in the aperture)::

    M = [[C1 + A1 cos 2φ_A1,  A1 sin 2φ_A1],
         [A1 sin 2φ_A1,       C1 − A1 cos 2φ_A1]]      (x, y order),

with ``θ = (θx, θy)`` along the detector columns (+kx) and rows (+ky): the image of pixel
**θ** is ``I_θ(r) = J(r + M θ)``, i.e. displaced by ``−M θ``. Probe positions are
``r = R(ρ) s`` for scan coordinates ``s = (sx, sy)`` (``ρ`` the scan rotation: the scan
x axis at ``ρ`` from kx towards ky, the twin's ``ScanGeometry.rotation``), so a shift
measured in the scan frame, rotated by ``R(ρ)``, is ``−(M θ + t)``; ``t`` absorbs an
error of the BF centre and the origin of the reference.

BF pixels are grouped into square bins; each bin's contrast image is aligned against the
mean of the other aligned bins (leave-one-out reference) by FFT cross-correlation refined
by an upsampled DFT (Guizar-Sicairos 2008, ``_xcorr``); the symmetric ``M`` and ``t`` are
fitted by weighted least squares, and the model's shifts realign the bins for the next
round until they settle. The first alignment comes from coordinate sweeps of C1 and the
two A1 components that maximise the power of the aligned sum (the tcBF image).

Validity: the parallax vanishes at focus, and there the BF images are not shifted copies
(their contrast is the aperture-edge, DPC-like, part), yet they align into a confident
fake. ``reliable`` is false when ``|C1 ± A1|`` is below about ``0.1 / (λ q²)`` (``q`` the
band's upper edge; ≈ 30 nm at 200 kV, α = 10 mrad) or when the mirrored model ``−M``
aligns the bins nearly as well as ``M`` (``parity``: the fake is odd in θ). Measure near
focus with a known defocus offset (``c1_offset``).

Crystals give periodic images (shifts ambiguous by lattice vectors) whose fringes are
displaced by ``M (θ − λ g / 2)`` (the midpoint of the interfering beams), not ``M θ``:
use an amorphous area. See docs/loop.md, "Autofocus by parallax".

References
----------
- J. M. Cowley, Appl. Phys. Lett. 15, 58 (1969): reciprocity of STEM BF and tilted TEM.
- A. R. Lupini, M. Chi, S. Jesse, "Rapid aberration measurement with pixelated
  detectors", J. Microsc. (2016): BF pixel image shifts are the gradient of chi.
- C. Ophus et al., Nat. Commun. 7, 10719 (2016): BF pixel images in 4D-STEM.
- G. Varnavides et al., "Iterative phase retrieval algorithms for scanning transmission
  electron microscopy", arXiv:2309.05250 (2023): the parallax (tcBF) reconstruction and
  its aberration fit (py4DSTEM, GPL-3: the method is followed, none of its code used).
- D. Ma, D. A. Muller, S. E. Zeltmann, "Using aberrations to improve dose-efficient
  tilt-corrected 4D-STEM imaging", arXiv:2510.01493 (2025): tcBF (the symmetric part)
  and tcDPC (the antisymmetric part, the near-focus fake here).
- M. Guizar-Sicairos, S. T. Thurman, J. R. Fienup, Opt. Lett. 33, 156 (2008).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bluestem.loop._xcorr import (
    BrightFieldBins,
    apodize,
    bandpass,
    bin_bright_field,
    bright_field_disc,
    coarse_search,
    fourier_shift,
    pad_to,
    register_round,
    tcbf_power,
)
from bluestem.loop.parallax_model import (
    AberrationEstimate,
    _model,
    _robust_fit,
    fit_shift_matrix,
    shift_matrix,
)

__all__ = [
    "BrightFieldBins",
    "ParallaxFit",
    "bin_bright_field",
    "bright_field_disc",
    "fit_parallax",
    "fit_shift_matrix",
    "shift_matrix",
]


@dataclass
class ParallaxFit(AberrationEstimate):
    """Aberrations fitted to the BF parallax (lengths m, angles rad, twin convention).

    Attributes
    ----------
    c1, a1, a1_angle : float
        Residual C1 (fitted minus ``c1_offset``; positive: overfocus), |A1|, and φ_A1 in
        [−π/2, π/2) from +kx towards +ky (two-fold: modulo π).
    sigma_c1, sigma_a1, sigma_a1_angle : float
        One-sigma uncertainties (fit covariance scaled by the residuals).
    residual : float
        RMS residual of the fitted displacements, m.
    explained : float
        Fraction of the displacements' variance the model explains (R²).
    reliable : bool
        Whether the alignment converged, the model explains at least ``min_explained`` of
        the shifts, the larger eigenvalue of M, ``|C1_total| + A1``, is at least
        ``blind``, and ``parity <= max_parity`` — or, far from focus (``|C1_total| + A1``
        at least ``FAR`` × ``blind``, beyond any fake parallax), ``parity <=
        FAR_PARITY``: a specimen of large features (nanoparticles) keeps some contrast
        when a large model is mirrored. Near focus the estimate is meaningless: measure
        with a defocus offset.
    parity : float
        tcBF contrast gain of the mirrored model ``−M`` over that of ``M``: ≈ 0 for a true
        parallax, ≈ 1 for the aperture-edge contrast that fakes one near focus.
    blind : float
        That limit, ``0.1 / (λ q_max²)`` (0 when no wavelength was given).
    c1_offset : float
        The deliberate defocus of the acquisition (``c1 + c1_offset`` was measured).
    n_pixels, n_bins : int
        BF detector pixels used and the bins they form.
    theta : ndarray (n_bins, 2)
        Bin angles (θy, θx) about the BF centre, rad.
    shifts, model_shifts : ndarray (n_bins, 2)
        Measured and fitted image shifts (dy, dx) in scan pixels
        (``img(s) ~ ref(s − shift)``); shifting the bins by ``−model_shifts`` and summing
        gives the tcBF image.
    weights : ndarray (n_bins,)
        Fit weights (0: rejected outlier).
    offset : ndarray (2,)
        Fitted constant displacement ``t`` (x, y), m.
    c3 : float
        C3 used or fitted.
    image : ndarray (ny, nx)
        tcBF image (mean aligned contrast).
    iterations, converged
        Alignment rounds run; whether the shifts settled.
    sweep : dict
        The coarse search: trial values and the tcBF power of each.
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
    parity: float
    blind: float
    c1_offset: float
    n_pixels: int
    n_bins: int
    theta: np.ndarray
    shifts: np.ndarray
    model_shifts: np.ndarray
    weights: np.ndarray
    offset: np.ndarray
    c3: float
    image: np.ndarray
    iterations: int
    converged: bool
    sweep: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The scalars and parameters (JSON-able), for a document or the loop record."""
        keys = ("c1", "a1", "a1_angle", "sigma_c1", "sigma_a1", "sigma_a1_angle", "residual",
                "explained", "reliable", "parity", "blind", "c1_offset", "n_pixels", "n_bins",
                "c3", "iterations", "converged")  # fmt: skip
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["parameters"] = dict(self.parameters)
        return out


#: Far from focus (``|C1| + A1 >= FAR * blind``) the parity limit is FAR_PARITY: the
#: aperture-edge contrast fakes at most about 1.3 blind (35 nm at 10 mrad), and fakes
#: have parity 0.5-1, while nanoparticles at 150-230 nm of defocus and astigmatism give
#: 0.25-0.39 (docs/loop.md, "Validity").
FAR, FAR_PARITY = 3.0, 0.45


def fit_parallax(
    data,
    step: tuple[float, float],
    angle_per_pixel: float,
    *,
    rotation: float = 0.0,
    wavelength: float | None = None,
    c1_offset: float = 0.0,
    bf_radius: float | None = None,
    bf_center: tuple[float, float] | None = None,
    bin_size: int | None = None,
    edge: float = 0.7,
    c3: float | None = 0.0,
    band: tuple[float, float] | None = None,
    upsample: int = 50,
    c1_range: float | None = None,
    max_step: float = 1.0,
    max_iterations: int = 10,
    tolerance: float = 0.01,
    min_explained: float = 0.9,
    max_parity: float = 0.25,
    bins: BrightFieldBins | None = None,
) -> ParallaxFit:
    """Fit C1 and A1 (optionally C3) to the parallax of the BF images of one scan.

    Parameters
    ----------
    data : array-like (ny, nx, ky, kx) or None
        The 4D dataset, or anything sliceable by scan rows (ignored if ``bins`` given).
    step : tuple of float
        Scan step (dy, dx), m.
    angle_per_pixel : float
        Detector angle per pixel, rad.
    rotation : float
        Scan rotation ρ, rad: the scan x axis lies at ρ from the detector's kx axis
        towards ky (the twin's ``ScanGeometry.rotation``).
    wavelength : float, optional
        Electron wavelength, m: sets the default band and the blind limit.
    c1_offset : float
        Defocus deliberately added for this acquisition, m; ``c1`` is reported without it.
    bf_radius, bf_center, bin_size, edge
        See :func:`bin_bright_field`.
    c3 : float or None
        Known C3 (its parallax ``C3 |θ|² θ`` is taken out), m; None fits it.
    band : tuple of float, optional
        Gaussian band-pass (low, high) of the correlation, 1/m. Default: low
        ``1 / fov``; high ``(1 − edge) α / λ`` (both ``θ ± λq`` of every used pixel
        inside the aperture) with a wavelength, else ``0.25 / step``.
    upsample : int
        Sub-pixel refinement factor of the registration.
    c1_range : float, optional
        Half-range of the coarse C1 search, m (default: a shift of a quarter of the
        field at the outermost bin).
    max_step : float
        Largest integer correction (scan pixels) a round may make to a bin's shift.
    max_iterations, tolerance
        Rounds at most; stop when the model's shifts move less than ``tolerance``
        scan pixels.
    min_explained, max_parity : float
        R² below which, and parity above which, the fit is not ``reliable``.
    bins : BrightFieldBins, optional
        Pre-binned BF images (``data`` is then not read).

    Returns
    -------
    ParallaxFit
    """
    dy, dx = (float(s) for s in step)
    if not (dy > 0 and dx > 0 and angle_per_pixel > 0 and upsample >= 1):
        raise ValueError(
            f"step {step!r}, angle_per_pixel {angle_per_pixel!r}, upsample {upsample!r}; "
            "allowed: steps and angle > 0, upsample >= 1"
        )
    if bins is None:
        bins = bin_bright_field(data, angle_per_pixel, bf_radius=bf_radius,
                                bf_center=bf_center, bin_size=bin_size, edge=edge)  # fmt: skip
    images, theta = bins.images, bins.theta
    nb, ny, nx = images.shape
    cos, sin = math.cos(rotation), math.sin(rotation)

    def to_specimen(px: np.ndarray) -> np.ndarray:  # scan pixels (dy, dx) -> m (y, x)
        sy, sx = px[:, 0] * dy, px[:, 1] * dx
        return np.stack([sin * sx + cos * sy, cos * sx - sin * sy], axis=1)

    def to_scan(d: np.ndarray) -> np.ndarray:  # m (y, x) -> scan pixels (dy, dx)
        sx, sy = cos * d[:, 1] + sin * d[:, 0], cos * d[:, 0] - sin * d[:, 1]
        return np.stack([sy / dy, sx / dx], axis=1)

    def shifts_of(p) -> np.ndarray:  # model shifts, scan pixels; t is a gauge: left out
        q = np.array(p, np.float64)
        q[3:5] = 0.0
        return to_scan(_model(theta, q, use_c3))

    if band is None:
        high = 0.25 / min(dy, dx)
        if wavelength:
            high = (1.0 - edge) * bins.radius * angle_per_pixel / wavelength
        band = (1.0 / min(ny * dy, nx * dx), high)
    blind = 0.1 / (wavelength * band[1] ** 2) if wavelength else 0.0
    mean = images.mean(axis=(1, 2), keepdims=True)
    contrast = images / np.where(mean > 0, mean, np.inf) - (mean > 0)
    window = apodize((ny, nx), 0.05)
    contrast -= (contrast * window).sum(axis=(1, 2), keepdims=True) / window.sum()
    shape = (2 * ny, 2 * nx)
    spectra = np.fft.fft2(pad_to(contrast * window, shape))
    filt = bandpass(shape, (dy, dx), *band)
    use_c3 = 0.0 if c3 is None else float(c3)
    params = np.zeros(5 if c3 is not None else 6)

    theta_max = float(np.max(np.hypot(theta[:, 0], theta[:, 1])))
    c_max = c1_range or min(ny * dy, nx * dx) / 4 / theta_max
    fsub = (spectra * filt)[:, ::2, ::2]
    params, sweep = coarse_search(fsub, shifts_of, params, c_max, 0.5 * min(dy, dx) / theta_max)
    model = shifts_of(params)
    weights = np.ones(nb)
    measured, res, cov = model, np.zeros((nb, 2)), np.zeros((params.size,) * 2)
    converged, iterations, history = False, 0, []
    for iterations in range(1, max_iterations + 1):  # noqa: B007
        residual_px, peaks = register_round(spectra, filt, model, upsample, max_step)
        measured = model + residual_px
        rho = np.clip(peaks, 0.0, 0.999)
        params, cov, res, weights = _robust_fit(theta, to_specimen(measured),
                                                rho * rho / (1.0 - rho * rho), c3)  # fmt: skip
        if c3 is None:
            use_c3 = float(params[5])
        new_model = shifts_of(params)
        if np.max(np.abs(new_model - model)) < tolerance:
            converged = True
        elif history and np.max(np.abs(new_model - history[-1][0])) < tolerance:
            # A two-cycle at the registration's resolution: settle on the mean.
            params = 0.5 * (params + history[-1][1])
            new_model, converged = shifts_of(params), True
        history = [*history[-1:], (model, params)]
        model = new_model
        if converged:
            break
    # Parity: the aperture-edge contrast that fakes a parallax near focus aligns as well
    # with -M as with M; a true parallax only with M.
    incoherent = float(np.sum(fsub.real**2 + fsub.imag**2))
    gain = tcbf_power(fsub, model) / incoherent - 1.0
    parity = (tcbf_power(fsub, -model) / incoherent - 1.0) / gain if gain > 0 else 1.0
    aligned = np.fft.ifft2(fourier_shift(spectra, -model)).real
    image = aligned.mean(axis=0)[ny // 2 : ny // 2 + ny, nx // 2 : nx // 2 + nx]

    c1, a, b = (float(v) for v in params[:3])
    a1 = math.hypot(a, b)
    angle = 0.5 * math.atan2(b, a)
    va, vb, vab = cov[1, 1], cov[2, 2], cov[1, 2]
    if a1 > 0:  # linear propagation; the angle's diverges as A1 -> 0
        var_a1 = (a * a * va + b * b * vb + 2 * a * b * vab) / a1**2
        var_phi = (b * b * va + a * a * vb - 2 * a * b * vab) / (4 * a1**4)
    else:
        var_a1, var_phi = 0.5 * (va + vb), math.inf
    wsum = max(float(weights.sum()), 1e-300)
    disp = to_specimen(measured)
    centred = disp - (weights @ disp) / wsum
    spread = float(weights @ np.sum(centred**2, axis=1))
    explained = 1.0 - float(weights @ np.sum(res**2, axis=1)) / max(spread, 1e-300)
    parameters = {
        "step": (dy, dx), "angle_per_pixel": float(angle_per_pixel),
        "rotation": float(rotation), "wavelength": wavelength,
        "bf_center": bins.centre, "bf_radius": bins.radius, "bin_size": bin_size,
        "edge": edge, "c3": c3, "band": tuple(float(v) for v in band),
        "upsample": upsample, "c1_range": c_max, "max_step": max_step,
        "max_iterations": max_iterations, "tolerance": tolerance,
        "min_explained": min_explained,
    }  # fmt: skip
    return ParallaxFit(
        c1=c1 - float(c1_offset),
        a1=a1,
        a1_angle=(angle + math.pi / 2) % math.pi - math.pi / 2,
        sigma_c1=math.sqrt(max(cov[0, 0], 0.0)),
        sigma_a1=math.sqrt(max(var_a1, 0.0)),
        sigma_a1_angle=math.sqrt(max(var_phi, 0.0)),
        residual=math.sqrt(float(weights @ np.sum(res**2, axis=1)) / wsum),
        explained=explained,
        reliable=bool(
            abs(c1) + a1 >= blind
            and explained >= min_explained
            and converged
            and parity <= (max_parity if abs(c1) + a1 < FAR * blind else FAR_PARITY)
        ),
        parity=float(parity),
        blind=blind,
        c1_offset=float(c1_offset),
        n_pixels=bins.n_pixels,
        n_bins=nb,
        theta=theta,
        shifts=measured,
        model_shifts=model,
        weights=weights,
        offset=np.array(params[3:5]),
        c3=use_c3,
        image=image,
        iterations=iterations,
        converged=converged,
        sweep=sweep,
        parameters=parameters,
    )
