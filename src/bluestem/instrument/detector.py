"""The pixelated detector's counters and calibration, as both sides of CA see them."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "COUNTER_DEPTHS",
    "DATA_TYPES",
    "PIXEL_SIZE",
    "angle_per_pixel",
    "data_type_of_depth",
    "dtype_of_data_type",
    "dtype_of_depth",
]

#: Counter depths in bits a Medipix3 offers (``DET:cam1:CounterDepth``).
COUNTER_DEPTHS = (1, 6, 12, 24)
#: ``DET:cam1:DataType_RBV`` names (areaDetector's) and their numpy dtypes.
DATA_TYPES = {"UInt8": np.dtype(np.uint8), "UInt16": np.dtype(np.uint16),
              "UInt32": np.dtype(np.uint32)}  # fmt: skip
#: Native pixel pitch in m of a Medipix3/Timepix sensor.
PIXEL_SIZE = 55e-6


def dtype_of_depth(depth: int | str) -> np.dtype:
    """Frame dtype of a counter depth in bits: uint8 (1, 6), uint16 (12), uint32 (24)."""
    try:
        bits = int(depth)
    except (TypeError, ValueError):
        bits = -1
    if bits not in COUNTER_DEPTHS:
        allowed = ", ".join(map(str, COUNTER_DEPTHS))
        raise ValueError(f"counter depth {depth!r}: allowed {allowed} bits")
    return np.dtype(np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32)


def data_type_of_depth(depth: int | str) -> str:
    """``DataType_RBV`` name of a counter depth (``"UInt16"`` for 12 bits)."""
    dtype = dtype_of_depth(depth)
    return next(name for name, dt in DATA_TYPES.items() if dt == dtype)


def dtype_of_data_type(name: str) -> np.dtype:
    """numpy dtype of a ``DataType_RBV`` name."""
    try:
        return DATA_TYPES[str(name)]
    except KeyError:
        allowed = ", ".join(DATA_TYPES)
        raise ValueError(f"data type {name!r}: allowed {allowed}") from None


def angle_per_pixel(pixel_size: float, camera_length: float, binning: int = 1) -> float:
    """Scattering angle per (binned) detector pixel in rad: binning × pixel / camera length.

    The small-angle form (exact to 1e-4 relative below 10 mrad per pixel), in SI units:
    ``pixel_size`` and ``camera_length`` in m.
    """
    pixel, length, b = float(pixel_size), float(camera_length), int(binning)
    if not (math.isfinite(pixel) and pixel > 0):
        raise ValueError(f"pixel_size {pixel_size!r} m: allowed > 0")
    if not (math.isfinite(length) and length > 0):
        raise ValueError(f"camera_length {camera_length!r} m: allowed > 0")
    if b < 1:
        raise ValueError(f"binning {binning!r}: allowed >= 1")
    return b * pixel / length
