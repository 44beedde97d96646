"""Scan geometry: the grid of probe positions in specimen coordinates."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ScanGeometry"]


def _pair(value, name: str, kind) -> tuple:
    try:
        pair = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (y, x), got {value!r}") from None
    if len(pair) != 2:
        raise ValueError(f"{name} must be a pair (y, x), got {value!r}")
    return pair


@dataclass(frozen=True)
class ScanGeometry:
    """A raster of probe positions.

    Parameters
    ----------
    shape : tuple of int
        Scan points (ny, nx); flat indices run row-major (x fastest).
    step : tuple of float
        Step (dy, dx) in m between neighbouring points, in the scan frame.
    rotation : float
        Angle in rad of the scan x axis w.r.t. the specimen x axis (counter-clockwise from
        +x towards +y): at 90 degrees the scan x axis runs along specimen +y.
    flyback : float
        Settling time in s at the start of each row. Timing only: it does not move
        positions.
    offset : tuple of float
        Specimen coordinates (y, x) in m of the scan centre (not rotated with the scan):
        every position is shifted by it. The IOC puts here where its scan offset, stage
        and drift put the specimen under the beam. Default (0, 0): centred on the
        specimen origin.
    """

    shape: tuple[int, int] = (128, 128)
    step: tuple[float, float] = (1e-10, 1e-10)
    rotation: float = 0.0
    flyback: float = 0.0
    offset: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        shape = _pair(self.shape, "shape", int)
        if shape != tuple(self.shape) or min(shape) < 1:
            raise ValueError(f"shape must be two integers >= 1 (ny, nx), got {self.shape!r}")
        step = _pair(self.step, "step", float)
        if not all(math.isfinite(s) and s > 0 for s in step):
            raise ValueError(f"step must be two finite lengths > 0 m, got {self.step!r}")
        if not math.isfinite(self.rotation):
            raise ValueError(f"rotation must be a finite angle in rad, got {self.rotation!r}")
        if not (math.isfinite(self.flyback) and self.flyback >= 0):
            raise ValueError(f"flyback must be a finite time >= 0 s, got {self.flyback!r}")
        offset = _pair(self.offset, "offset", float)
        if not all(math.isfinite(o) for o in offset):
            raise ValueError(f"offset must be two finite lengths in m, got {self.offset!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "offset", offset)

    @classmethod
    def from_fov(
        cls,
        shape: tuple[int, int],
        fov: tuple[float, float],
        rotation: float = 0.0,
        flyback: float = 0.0,
        offset: tuple[float, float] = (0.0, 0.0),
    ) -> ScanGeometry:
        """Geometry covering a field of view (fov_y, fov_x) in m: ``step = fov / shape``
        (each scan pixel covers one step), centred on ``offset``."""
        ny, nx = _pair(shape, "shape", int)
        fy, fx = _pair(fov, "fov", float)
        if not (math.isfinite(fy) and math.isfinite(fx) and fy > 0 and fx > 0):
            raise ValueError(f"fov must be two finite lengths > 0 m, got {fov!r}")
        if ny < 1 or nx < 1:
            raise ValueError(f"shape must be two integers >= 1 (ny, nx), got {shape!r}")
        return cls(
            shape=(ny, nx),
            step=(fy / ny, fx / nx),
            rotation=rotation,
            flyback=flyback,
            offset=offset,
        )

    @property
    def size(self) -> int:
        """Number of scan points, ny * nx."""
        return self.shape[0] * self.shape[1]

    def positions(self) -> np.ndarray:
        """Probe positions, shape (ny, nx, 2), float64 metres (y, x) in specimen
        coordinates, centred on the scan centre :attr:`offset`."""
        ny, nx = self.shape
        sy = (np.arange(ny) - (ny - 1) / 2.0) * self.step[0]
        sx = (np.arange(nx) - (nx - 1) / 2.0) * self.step[1]
        yy, xx = np.meshgrid(sy, sx, indexing="ij")
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        out = np.empty((ny, nx, 2))
        out[..., 0] = s * xx + c * yy
        out[..., 1] = c * xx - s * yy
        if self.offset != (0.0, 0.0):
            out += np.asarray(self.offset)
        return out
