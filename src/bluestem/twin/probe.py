"""Probe-forming optics: aperture, aberration function and the probe wave."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from bluestem.twin.grid import SimulationGrid

__all__ = ["Optics", "aberration_function", "probe_wave"]


@dataclass(frozen=True)
class Optics:
    """Probe-forming optics (Krivanek notation).

    Parameters
    ----------
    high_tension : float
        Accelerating voltage in V.
    convergence_semi_angle : float
        Probe-forming aperture semi-angle alpha in rad.
    defocus : float
        C1 in m. Negative C1 is underfocus: the Scherzer focus that balances a positive
        C3 lies at negative C1 (``C1 = -sqrt(4/3 C3 lambda)``).
    astigmatism : float
        |A1| in m (two-fold astigmatism).
    astigmatism_angle : float
        Azimuth phi_A1 of A1 in rad, measured from +kx towards +ky.
    cs : float
        C3 (spherical aberration) in m.
    """

    high_tension: float = 200e3
    convergence_semi_angle: float = 20e-3
    defocus: float = 0.0
    astigmatism: float = 0.0
    astigmatism_angle: float = 0.0
    cs: float = 1.2e-3

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{field.name} must be a finite number, got {value!r}")
        if self.high_tension <= 0:
            raise ValueError(f"high_tension must be > 0 V, got {self.high_tension!r}")
        if not 0 < self.convergence_semi_angle < 0.5:
            raise ValueError(
                "convergence_semi_angle must be in (0, 0.5) rad, "
                f"got {self.convergence_semi_angle!r}"
            )
        if self.astigmatism < 0:
            raise ValueError(f"astigmatism is |A1| and must be >= 0 m, got {self.astigmatism!r}")


def aberration_function(
    ky: np.ndarray, kx: np.ndarray, wavelength: float, optics: Optics
) -> np.ndarray:
    """Aberration phase chi(k) in rad.

    ``chi = (2 pi / lambda) [C1 theta**2 / 2 + A1 theta**2 cos(2 (phi - phi_A1)) / 2
    + C3 theta**4 / 4]`` with ``theta = lambda |k|`` and ``phi = atan2(ky, kx)``.

    Parameters
    ----------
    ky, kx : ndarray
        Spatial frequencies in 1/m (broadcastable).
    wavelength : float
        Electron wavelength in m.
    optics : Optics
        Aberration coefficients.
    """
    theta2 = (wavelength * wavelength) * (ky * ky + kx * kx)
    phi = np.arctan2(ky, kx)
    astig = optics.astigmatism * np.cos(2.0 * (phi - optics.astigmatism_angle))
    return (2.0 * np.pi / wavelength) * (
        0.5 * (optics.defocus + astig) * theta2 + 0.25 * optics.cs * theta2 * theta2
    )


def probe_wave(optics: Optics, grid: SimulationGrid) -> np.ndarray:
    """Real-space probe wave centred on the window pixel (ny // 2, nx // 2).

    ``psi(k) = A(k) exp(-i chi(k))`` with the hard aperture ``A = [lambda |k| <= alpha]``,
    inverse Fourier transformed and normalised so that ``sum |psi|**2 = 1``.

    Returns
    -------
    ndarray of complex128, shape ``grid.shape``
    """
    ky, kx = grid.frequencies()
    theta = grid.wavelength * np.hypot(ky, kx)
    aperture = theta <= optics.convergence_semi_angle
    if not aperture.any():
        raise ValueError("the probe-forming aperture covers no detector pixel")
    psi_k = aperture * np.exp(-1j * aberration_function(ky, kx, grid.wavelength, optics))
    psi = np.fft.fftshift(np.fft.ifft2(psi_k))
    return psi / np.sqrt(np.sum(np.abs(psi) ** 2))
