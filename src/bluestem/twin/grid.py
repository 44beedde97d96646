"""The simulation grid, tied to the detector: one FFT pixel is one native detector pixel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bluestem.twin.detector import DetectorModel
from bluestem.twin.wavelength import electron_wavelength, interaction_constant

__all__ = ["SimulationGrid"]


@dataclass(frozen=True)
class SimulationGrid:
    """Real- and reciprocal-space sampling of one diffraction frame.

    With ``N`` native pixels and ``theta_px = pixel_size / camera_length``, the reciprocal
    sampling is ``dk = theta_px / wavelength``, the real-space window is ``1 / dk`` wide and
    sampled at ``d = 1 / (N dk)``. High tension, pixel size and camera length enter the
    physics only through ``dk``.

    Parameters
    ----------
    shape : tuple of int
        Native pixels (ny, nx) of the window (= the detector).
    wavelength : float
        Electron wavelength in m.
    sigma : float
        Interaction constant in rad / (V m).
    dk : float
        Reciprocal sampling in 1/m per native pixel.
    """

    shape: tuple[int, int]
    wavelength: float
    sigma: float
    dk: float

    @classmethod
    def from_setup(cls, high_tension: float, detector: DetectorModel) -> SimulationGrid:
        """Grid for a high tension (V) and a detector."""
        wavelength = electron_wavelength(high_tension)
        return cls(
            shape=detector.shape,
            wavelength=wavelength,
            sigma=interaction_constant(high_tension),
            dk=detector.native_angle_per_pixel / wavelength,
        )

    @property
    def sampling(self) -> tuple[float, float]:
        """Real-space pixel size (dy, dx) in m."""
        return (1.0 / (self.shape[0] * self.dk), 1.0 / (self.shape[1] * self.dk))

    @property
    def extent(self) -> float:
        """Real-space window width in m (``1 / dk``)."""
        return 1.0 / self.dk

    def offsets(self, axis: int) -> np.ndarray:
        """Window pixel coordinates relative to the probe position along ``axis`` (m)."""
        n = self.shape[axis]
        return (np.arange(n) - n // 2) * self.sampling[axis]

    def frequencies(self) -> tuple[np.ndarray, np.ndarray]:
        """Spatial frequencies (ky, kx) in 1/m, in FFT order, as broadcastable 2D arrays."""
        ky = np.fft.fftfreq(self.shape[0], d=self.sampling[0])
        kx = np.fft.fftfreq(self.shape[1], d=self.sampling[1])
        return ky[:, None], kx[None, :]
