"""The multislice representation of a specimen: slice potentials and their order."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SliceStack", "check_tilt"]


def check_tilt(tilt) -> tuple[float, float]:
    """``tilt`` as (theta_y, theta_x) floats in rad, or a ValueError naming it."""
    try:
        out = tuple(float(t) for t in tilt)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 2 or not all(math.isfinite(t) and abs(t) < 0.2 for t in out):
        raise ValueError(f"tilt must be (theta_y, theta_x) with |theta| < 0.2 rad, got {tilt!r}")
    return out


@dataclass(frozen=True, eq=False)
class SliceStack:
    """A specimen cut into slices of equal thickness, entrance surface first.

    Slice ``s`` has the projected potential ``fields[sequence[s]]`` (a periodic crystal
    repeats a few distinct slices, so each is sampled once per probe position).

    Parameters
    ----------
    fields : tuple
        Distinct slice potentials: objects with ``potential(y, x, grid)`` returning the
        projected potential of the slice (V m), shape (n, ny, nx), over the windows
        centred on positions (y, x) in m (e.g. :class:`~bluestem.twin.atoms.AtomField`).
    sequence : array of int
        Index into ``fields`` of every slice (at least one slice).
    thickness : float
        Slice thickness (the propagation distance between slices) in m.
    tilt : tuple of float
        (theta_y, theta_x) in rad: the beam direction relative to the specimen normal.
        Inside the specimen the wave drifts by ``z tan(theta)`` (Kirkland's tilted
        propagator); the diffraction pattern stays centred on the optic axis.
    """

    fields: tuple
    sequence: np.ndarray
    thickness: float
    tilt: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        fields = tuple(self.fields)
        seq = np.asarray(self.sequence)
        if not fields:
            raise ValueError("a slice stack needs at least one slice potential")
        if seq.ndim != 1 or seq.size < 1 or not np.issubdtype(seq.dtype, np.integer):
            raise ValueError(f"sequence must be a non-empty 1-D integer array, got {seq!r}")
        if seq.min() < 0 or seq.max() >= len(fields):
            raise ValueError(f"sequence indices must lie in [0, {len(fields) - 1}], got {seq!r}")
        dz = float(self.thickness)
        if not (math.isfinite(dz) and 0 < dz < 1e-6):
            raise ValueError(f"slice thickness must be in (0, 1e-6) m, got {self.thickness!r}")
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "sequence", seq.astype(np.int64))
        object.__setattr__(self, "thickness", dz)
        object.__setattr__(self, "tilt", check_tilt(self.tilt))

    @classmethod
    def periodic(cls, fields, slices: int, thickness: float, tilt=(0.0, 0.0)) -> SliceStack:
        """``slices`` slices cycling through ``fields`` (a crystal's repeat along z)."""
        return cls(tuple(fields), np.arange(int(slices)) % len(fields), thickness, tilt)

    @property
    def slices(self) -> int:
        """Number of slices."""
        return int(self.sequence.size)

    @property
    def depth(self) -> float:
        """Total thickness (m): slices times slice thickness."""
        return self.slices * self.thickness

    def reuse(self) -> np.ndarray:
        """For each field, whether more than one slice uses it (worth keeping)."""
        return np.bincount(self.sequence, minlength=len(self.fields)) > 1

    def parameters(self) -> dict[str, Any]:
        """Slice thickness, number of slices, depth and tilt, for metadata."""
        return {
            "slice_thickness": self.thickness,
            "slices": self.slices,
            "depth": self.depth,
            "tilt": list(self.tilt),
        }
