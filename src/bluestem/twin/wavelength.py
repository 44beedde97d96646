"""Relativistic electron wavelength and the phase-object interaction constant."""

from __future__ import annotations

import math

# CODATA 2018 (h, e and c are exact in the 2019 SI; m0 is the 2018 recommended value).
# scipy is not a dependency, so the values are written out here.
PLANCK = 6.62607015e-34  # J s
ELEMENTARY_CHARGE = 1.602176634e-19  # C
ELECTRON_MASS = 9.1093837015e-31  # kg
SPEED_OF_LIGHT = 299792458.0  # m / s

__all__ = [
    "ELECTRON_MASS",
    "ELEMENTARY_CHARGE",
    "PLANCK",
    "SPEED_OF_LIGHT",
    "electron_wavelength",
    "interaction_constant",
]


def _check_high_tension(high_tension: float) -> float:
    value = float(high_tension)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"high_tension must be a finite voltage > 0 V, got {high_tension!r}")
    return value


def electron_wavelength(high_tension: float) -> float:
    """Relativistic de Broglie wavelength of an electron.

    Parameters
    ----------
    high_tension : float
        Accelerating voltage in volts (> 0).

    Returns
    -------
    float
        Wavelength in metres, ``h / sqrt(2 m0 e V (1 + e V / (2 m0 c**2)))``.
    """
    voltage = _check_high_tension(high_tension)
    energy = ELEMENTARY_CHARGE * voltage
    rest = ELECTRON_MASS * SPEED_OF_LIGHT**2
    return PLANCK / math.sqrt(2.0 * ELECTRON_MASS * energy * (1.0 + energy / (2.0 * rest)))


def interaction_constant(high_tension: float) -> float:
    """Interaction constant of the phase-object approximation (Kirkland).

    Parameters
    ----------
    high_tension : float
        Accelerating voltage in volts (> 0).

    Returns
    -------
    float
        ``sigma = 2 pi m e lambda / h**2`` with the relativistic mass ``m = gamma m0``, in
        rad / (V m): a projected potential ``V_proj`` (V m) gives the phase ``sigma V_proj``.
    """
    voltage = _check_high_tension(high_tension)
    gamma = 1.0 + ELEMENTARY_CHARGE * voltage / (ELECTRON_MASS * SPEED_OF_LIGHT**2)
    wavelength = electron_wavelength(voltage)
    return 2.0 * math.pi * gamma * ELECTRON_MASS * ELEMENTARY_CHARGE * wavelength / PLANCK**2
