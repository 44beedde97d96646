"""Differential phase contrast from the COM field: rotation, divergence, integration.

Conventions
-----------
The COM of the diffraction pattern (detector frame, components (y, x) along the
detector's rows and columns) is turned into a vector in the scan frame by

1. ``flip``: transposing the detector axes (swapping the y and x components), then
2. rotating by ``rotation_deg`` from +x towards +y:
   ``sx = cos(a) cx - sin(a) cy``, ``sy = sin(a) cx + cos(a) cy``.

For a thin phase object the beam is deflected up the phase gradient: the COM in rad is
``(lambda / 2 pi) grad(phi)`` (a phase ramp ``exp(2 pi i q . r)`` moves the COM by
``+lambda q``). So in the scan frame COM is proportional to ``grad(phi)``,
``ddpc = div(COM)`` is proportional to the Laplacian of phi (negative on an atom, where
phi peaks) and ``idpc`` returns phi (up to its mean and the factor ``2 pi / lambda`` when
the COM is in rad and the step in m).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["RotationFit", "ddpc", "estimate_rotation", "idpc", "rotate_com", "rotation_fit"]


def _fields(com_y, com_x) -> tuple[np.ndarray, np.ndarray]:
    cy = np.asarray(com_y, dtype=np.float64)
    cx = np.asarray(com_x, dtype=np.float64)
    if cy.ndim != 2 or cy.shape != cx.shape or min(cy.shape) < 2:
        raise ValueError(
            f"com_y {cy.shape} and com_x {cx.shape}; allowed: two 2-D arrays of one shape, "
            "each side >= 2"
        )
    return cy, cx


def _step(step) -> tuple[float, float]:
    try:
        dy, dx = (float(s) for s in step)
    except (TypeError, ValueError):
        raise ValueError(f"step must be a pair (dy, dx), got {step!r}") from None
    if not all(math.isfinite(s) and s > 0 for s in (dy, dx)):
        raise ValueError(f"step {step!r}; allowed: two finite steps > 0")
    return dy, dx


def _angle(rotation_deg) -> float:
    a = float(rotation_deg)
    if not math.isfinite(a):
        raise ValueError(f"rotation_deg {rotation_deg!r}; allowed: a finite angle in degrees")
    return math.radians(a)


def rotate_com(com_y, com_x, rotation_deg: float = 0.0, flip: bool = False):
    """The COM field in the scan frame (see the module conventions).

    Returns
    -------
    (sy, sx) : tuple of ndarray, float64
    """
    cy, cx = _fields(com_y, com_x)
    a = _angle(rotation_deg)
    if flip:
        cy, cx = cx, cy
    c, s = math.cos(a), math.sin(a)
    return s * cx + c * cy, c * cx - s * cy


def _div_curl(vy, vx, dy, dx):
    gy_y, gy_x = np.gradient(vy, dy, dx)
    gx_y, gx_x = np.gradient(vx, dy, dx)
    return gx_x + gy_y, gy_x - gx_y


def ddpc(com_y, com_x, *, rotation_deg=0.0, flip=False, step=(1.0, 1.0)) -> np.ndarray:
    """Divergence of the scan-frame COM field (central differences, ``np.gradient``).

    Units: COM units per step unit. NaN where the COM or a neighbour is NaN.
    """
    dy, dx = _step(step)
    sy, sx = rotate_com(com_y, com_x, rotation_deg, flip)
    return _div_curl(sy, sx, dy, dx)[0]


def idpc(
    com_y, com_x, *, rotation_deg=0.0, flip=False, step=(1.0, 1.0), regularization=1e-3
) -> np.ndarray:
    """Integrated DPC: the potential phi with ``grad(phi)`` closest to the COM field.

    The scan-frame field is extended by mirroring (odd/even per component, so the result
    obeys natural boundary conditions instead of wrapping around) and integrated in
    Fourier space (Frankot & Chellappa, IEEE TPAMI 10, 439 (1988); for iDPC, Lazic et al.,
    Ultramicroscopy 160, 265 (2016)):
    ``phi_k = -i (k . v_k) / (2 pi (|k|**2 + k_r**2))``, with the high-pass
    ``k_r = regularization / sqrt(dy * dx)``. NaNs are replaced by 0 first.

    Parameters
    ----------
    regularization : float
        High-pass cut-off in cycles per scan step (>= 0): periods longer than about
        ``1 / regularization`` steps are attenuated (by half at that period). The default
        1e-3 only steadies the lowest frequencies of scans up to ~1000 steps.

    Returns
    -------
    ndarray, float64 (ny, nx)
        phi in COM units times step units, mean subtracted.
    """
    dy, dx = _step(step)
    reg = float(regularization)
    if not (math.isfinite(reg) and reg >= 0):
        raise ValueError(f"regularization {regularization!r}; allowed: a finite value >= 0")
    sy, sx = rotate_com(com_y, com_x, rotation_deg, flip)
    sy = np.nan_to_num(sy, nan=0.0, posinf=0.0, neginf=0.0)
    sx = np.nan_to_num(sx, nan=0.0, posinf=0.0, neginf=0.0)
    ny, nx = sy.shape
    # Half-sample mirror: phi even about each edge, so d/dx phi is odd in x, even in y.
    ex = np.block([[sx, -sx[:, ::-1]], [sx[::-1, :], -sx[::-1, ::-1]]])
    ey = np.block([[sy, sy[:, ::-1]], [-sy[::-1, :], -sy[::-1, ::-1]]])
    ky = np.fft.fftfreq(2 * ny, d=dy)[:, None]
    kx = np.fft.fftfreq(2 * nx, d=dx)[None, :]
    k2 = ky * ky + kx * kx + (reg * reg) / (dy * dx)
    k2[0, 0] = 1.0  # the mean is undefined (and removed below)
    num = ky * np.fft.fft2(ey) + kx * np.fft.fft2(ex)
    phi_k = -1j * num / (2 * np.pi * k2)
    phi_k[0, 0] = 0.0
    phi = np.fft.ifft2(phi_k).real[:ny, :nx]
    return phi - phi.mean()


@dataclass(frozen=True)
class RotationFit:
    """How the scan-to-detector rotation was found, and how well the data determine it.

    The summed squared curl of the rotated field is ``E(a) = m - R cos(2 (a - a0))``. For
    a clean gradient field ``R`` is nearly ``m`` (the curl vanishes at ``a0`` only); for
    isotropic noise over ``N`` positions (about ``N / 2`` independent: the central
    differences of neighbouring positions share pixels) ``sqrt(N / 2) R / m`` follows a
    Rayleigh distribution of scale 1 (mean 1.25; measured on white noise: 1.25), and
    ``a0`` wanders by about ``1 / (2 sqrt(N / 2) R / m)`` rad.

    Attributes
    ----------
    rotation_deg : float
        In (-180, 180].
    flip : bool
    significance : float
        ``sqrt(N / 2) R / m``: how far the angle dependence stands above noise (noise
        alone: mean 1.25, above 3 with probability 1 %).
    flip_significance : float
        ``2 sqrt(N / 2)`` times the other flip's normalised residual minus this one's.
    skewness : float
        ``|skewness|`` of the integrated phase that picked ``a`` over ``a + 180``.
    neighbourhoods : int
        ``N``, the positions where the curl and divergence are finite.
    """

    rotation_deg: float
    flip: bool
    significance: float
    flip_significance: float
    skewness: float
    neighbourhoods: int

    #: Below these, :meth:`problems` calls the fit poorly conditioned.
    MIN_SIGNIFICANCE = 3.0
    MIN_FLIP_SIGNIFICANCE = 2.0
    MIN_SKEWNESS = 0.2

    @property
    def uncertainty_deg(self) -> float:
        """About one standard deviation of ``rotation_deg`` from noise."""
        return math.degrees(0.5 / max(self.significance, 1e-12))

    def problems(self) -> list[str]:
        """Why the fit is poorly conditioned, in words (empty when it is well determined)."""
        out = []
        if self.significance < self.MIN_SIGNIFICANCE:
            out.append(
                f"the curl barely depends on the rotation (significance "
                f"{self.significance:.1f} < {self.MIN_SIGNIFICANCE}, about "
                f"±{min(self.uncertainty_deg, 90.0):.0f} deg): noise, or an undersampled, "
                "aliased COM field"
            )
        if self.flip_significance < self.MIN_FLIP_SIGNIFICANCE:
            out.append(f"the flip is a guess (significance {self.flip_significance:.1f} < "
                       f"{self.MIN_FLIP_SIGNIFICANCE})")  # fmt: skip
        if self.skewness < self.MIN_SKEWNESS:
            out.append(f"a and a + 180 deg are not told apart (phase skewness "
                       f"{self.skewness:.2f} < {self.MIN_SKEWNESS})")  # fmt: skip
        return out


def rotation_fit(com_y, com_x, *, step=(1.0, 1.0)) -> RotationFit:
    """Scan-to-detector rotation and flip that make the COM field curl-free, with how well
    the data determine them (:class:`RotationFit`).

    The COM of a phase object is a gradient, so its curl vanishes in the scan frame
    (py4DSTEM's DPC calibration; Savitzky et al., Microsc. Microanal. 27, 712 (2021)).
    For a rotation ``a`` the discrete curl is ``cos(a) C + sin(a) D`` exactly (C, D: curl
    and divergence of the unrotated field), so the summed squared curl
    ``E(a) = m + A cos(2a) + c sin(2a)`` is minimised in closed form, for each flip; the
    flip with the smaller normalised residual ``E_min / (|C|**2 + |D|**2)`` wins.

    The curl cannot tell ``a`` from ``a + 180``: the result is chosen so that the integrated
    phase (:func:`idpc`) has positive skewness, i.e. sparse positive maxima as atoms and
    particles give (the phase of a positive projected potential). For a specimen without
    such contrast (skewness near 0) the 180 degree choice is arbitrary: give
    ``rotation_deg`` explicitly, e.g. from a calibration.

    NaN positions (and their neighbours) are left out.
    """
    cy, cx = _fields(com_y, com_x)
    dy, dx = _step(step)
    fits = []
    for flip in (False, True):
        vy, vx = (cx, cy) if flip else (cy, cx)
        div, curl = _div_curl(vy, vx, dy, dx)
        ok = np.isfinite(div) & np.isfinite(curl)
        if not ok.any():
            raise ValueError("the COM field has no finite 2x2 neighbourhood to estimate from")
        d, c = div[ok], curl[ok]
        a, b, x = float(c @ c), float(d @ d), float(c @ d)
        total = a + b
        if total == 0:
            raise ValueError("the COM field is constant: no rotation can be estimated")
        half = 0.5 * (a - b)
        swing = math.hypot(half, x)
        angle = 0.5 * (math.atan2(x, half) + math.pi)
        residual = (0.5 * total - swing) / total
        fits.append((residual, angle, flip, swing / (0.5 * total), int(ok.sum())))
    fits.sort(key=lambda f: f[0])
    (residual, angle, flip, sharpness, n), (other, *_rest) = fits
    deg = math.degrees(angle)
    phi = idpc(cy, cx, rotation_deg=deg, flip=flip, step=step)
    spread = phi.std()
    skew = float(np.mean((phi / spread) ** 3)) if spread > 0 else 0.0
    if skew < 0:
        deg += 180.0
    deg = math.remainder(deg, 360.0)
    # Central differences of neighbouring positions share pixels: about n / 2 independent
    # ones (white noise then gives a significance of mean 1.25, as independent samples do).
    root = math.sqrt(n / 2)
    return RotationFit(
        rotation_deg=180.0 if deg == -180.0 else deg,
        flip=flip,
        significance=float(sharpness * root),
        flip_significance=float(2.0 * (other - residual) * root),
        skewness=abs(skew),
        neighbourhoods=n,
    )


def estimate_rotation(com_y, com_x, *, step=(1.0, 1.0)) -> tuple[float, bool]:
    """Scan-to-detector rotation and flip that make the COM field curl-free
    (:func:`rotation_fit`, which also says how well they are determined).

    Returns
    -------
    rotation_deg : float
        In (-180, 180].
    flip : bool
    """
    fit = rotation_fit(com_y, com_x, step=step)
    return fit.rotation_deg, fit.flip
