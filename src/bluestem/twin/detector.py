"""The pixelated detector as the twin sees it: pixel grid, geometry, counter depth."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The counter depths, their dtypes and the angle per pixel are the instrument's vocabulary:
# the IOC, the devices and the plans read the same definitions.
from bluestem.instrument import COUNTER_DEPTHS, PIXEL_SIZE, angle_per_pixel, dtype_of_depth

__all__ = ["COUNTER_DEPTHS", "DetectorModel"]


@dataclass(frozen=True)
class DetectorModel:
    """A counting pixelated detector.

    Parameters
    ----------
    shape : tuple of int
        Native pixels (ky, kx).
    pixel_size : float
        Native pixel pitch in metres.
    camera_length : float
        Effective camera length in metres; the angle per native pixel is
        ``pixel_size / camera_length``.
    counter_depth : int
        Counter bits, one of 1, 6, 12, 24; counts saturate at ``2**counter_depth - 1``.
    binning : int
        On-chip binning factor; must divide both native dimensions.
    """

    shape: tuple[int, int] = (128, 128)
    pixel_size: float = PIXEL_SIZE
    camera_length: float = 0.1
    counter_depth: int = 12
    binning: int = 1

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 2 or min(shape) < 2 or shape != tuple(self.shape):
            raise ValueError(f"shape must be two integers >= 2 (ky, kx), got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        for name in ("pixel_size", "camera_length"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite length > 0 m, got {value!r}")
        if self.counter_depth not in COUNTER_DEPTHS:
            raise ValueError(
                f"counter_depth must be one of {sorted(COUNTER_DEPTHS)} bits, "
                f"got {self.counter_depth!r}"
            )
        binning = self.binning
        if not isinstance(binning, int | np.integer) or binning < 1:
            raise ValueError(f"binning must be an integer >= 1, got {binning!r}")
        if shape[0] % binning or shape[1] % binning:
            raise ValueError(
                f"binning {binning} does not divide the detector shape {shape}; allowed: "
                f"common divisors of {shape[0]} and {shape[1]}"
            )

    @property
    def frame_shape(self) -> tuple[int, int]:
        """Delivered frame shape (ky, kx) after binning."""
        return (self.shape[0] // self.binning, self.shape[1] // self.binning)

    @property
    def dtype(self) -> np.dtype:
        """Delivered pixel dtype: uint8 for 1 and 6 bit, uint16 for 12, uint32 for 24."""
        return dtype_of_depth(self.counter_depth)

    @property
    def max_count(self) -> int:
        """Saturation count, ``2**counter_depth - 1``."""
        return 2**self.counter_depth - 1

    @property
    def angle_per_pixel(self) -> float:
        """Scattering angle per delivered (binned) pixel in rad."""
        return angle_per_pixel(self.pixel_size, self.camera_length, self.binning)

    @property
    def native_angle_per_pixel(self) -> float:
        """Scattering angle per native pixel in rad."""
        return angle_per_pixel(self.pixel_size, self.camera_length)
