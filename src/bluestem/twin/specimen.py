"""Specimens: the base class and the specimens without atoms.

A specimen is a thin phase object ``t(y, x)``; the atomic specimens can also be cut into
slices for multislice (``slice_stack``; chosen by their ``multislice`` parameter). Each
also maps probe positions to a cache
key and a canonical position (``canonical``): positions with one key give identical
noiseless frames, because the frame is always computed at the canonical position.
The name -> class table and :func:`~bluestem.twin.specimens.make_specimen` are in
:mod:`bluestem.twin.specimens`, which imports every specimen module (none imports it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bluestem.twin.grid import SimulationGrid

if TYPE_CHECKING:
    from bluestem.twin.slices import SliceStack

__all__ = ["PhaseRamp", "Specimen", "Vacuum", "quantise_to_grid"]


class Specimen:
    """Base class of the specimens (all are frozen dataclasses).

    A subclass sets ``name`` (its key in :data:`bluestem.twin.SPECIMENS`) and implements
    :meth:`canonical` and :meth:`transmission`; one with thickness may implement
    :meth:`slice_stack` and declare a ``multislice`` parameter: when it is true, the twin
    propagates through the slices instead of using the phase object.
    """

    name: ClassVar[str] = ""
    #: Whether the twin renders this specimen by multislice (a parameter where supported).
    multislice = False

    def canonical(
        self, y: np.ndarray, x: np.ndarray, grid: SimulationGrid
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cache keys (int64) and canonical positions (m) for probe positions (m)."""
        raise NotImplementedError

    def transmission(self, y: np.ndarray, x: np.ndarray, grid: SimulationGrid) -> np.ndarray:
        """Transmission function over the windows centred on positions (y, x) in m.

        Returns
        -------
        ndarray of complex128, shape (n, ny, nx)
            Window pixel (i, j) of window w is at ``(y[w] + (i - ny // 2) dy,
            x[w] + (j - nx // 2) dx)``.
        """
        raise NotImplementedError

    def slice_stack(self, thickness: float | None = None) -> SliceStack:
        """The specimen cut into slices for multislice.

        Parameters
        ----------
        thickness : float, optional
            Thickness in m (rounded to whole slices); default: the specimen's own.

        Raises
        ------
        ValueError
            If the specimen has no multislice representation (or no free thickness).
        """
        raise ValueError(f"specimen {self.name!r} has no multislice representation")

    def parameters(self) -> dict[str, Any]:
        """Name and parameters (the dataclass fields), for metadata."""
        params: dict[str, Any] = {"name": self.name}
        if is_dataclass(self):
            params.update({f.name: getattr(self, f.name) for f in fields(self)})
        else:
            params.update({k: v for k, v in vars(self).items() if not k.startswith("_")})
        return params


def quantise_to_grid(
    y: np.ndarray, x: np.ndarray, grid: SimulationGrid
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions rounded to the simulation sampling, and a key packing both indices."""
    dy, dx = grid.sampling
    iy = np.rint(np.asarray(y, dtype=np.float64) / dy).astype(np.int64)
    ix = np.rint(np.asarray(x, dtype=np.float64) / dx).astype(np.int64)
    if iy.size and max(np.abs(iy).max(), np.abs(ix).max()) >= 2**31:
        raise ValueError("probe position is too far from the origin (over 2**31 pixels)")
    keys = (iy << 32) + ix
    return keys, iy * dy, ix * dx


@dataclass(frozen=True)
class Vacuum(Specimen):
    """No specimen: ``t = 1``. Every position gives the same frame."""

    name: ClassVar[str] = "vacuum"

    def canonical(self, y, x, grid):
        n = np.asarray(y).size
        return np.zeros(n, np.int64), np.zeros(n), np.zeros(n)

    def transmission(self, y, x, grid):
        return np.ones((np.asarray(y).size, *grid.shape), np.complex128)


@dataclass(frozen=True)
class PhaseRamp(Specimen):
    """A uniform deflection: ``t = exp(i 2 pi q0 . r)`` with ``q0 = beta / lambda``.

    The diffraction pattern moves by ``beta / theta_px`` native pixels, towards +ky for a
    positive ``beta_y`` and +kx for a positive ``beta_x``; the intensity does not depend on
    the probe position (one cache key).

    Parameters
    ----------
    deflection : tuple of float
        (beta_y, beta_x) in rad.
    """

    name: ClassVar[str] = "phase-ramp"
    deflection: tuple[float, float] = (1e-3, 0.0)

    def __post_init__(self) -> None:
        try:
            beta = tuple(float(b) for b in self.deflection)
        except (TypeError, ValueError):
            beta = ()
        if len(beta) != 2 or not all(math.isfinite(b) and abs(b) < 0.5 for b in beta):
            raise ValueError(
                f"deflection must be (beta_y, beta_x) with |beta| < 0.5 rad, "
                f"got {self.deflection!r}"
            )
        object.__setattr__(self, "deflection", beta)

    def canonical(self, y, x, grid):
        n = np.asarray(y).size
        return np.zeros(n, np.int64), np.zeros(n), np.zeros(n)

    def transmission(self, y, x, grid):
        qy, qx = (b / grid.wavelength for b in self.deflection)
        yy = np.asarray(y, np.float64)[:, None, None] + grid.offsets(0)[None, :, None]
        xx = np.asarray(x, np.float64)[:, None, None] + grid.offsets(1)[None, None, :]
        return np.exp(2j * np.pi * (qy * yy + qx * xx))
