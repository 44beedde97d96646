"""Plan arguments checked before anything moves or acquires."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bluestem.instrument import DWELL_MAX, EXPOSURE_MAX, SCAN_SHAPE_MAX

__all__ = [
    "MAX_DWELL",
    "MAX_EXPOSURE",
    "MAX_SHAPE",
    "check_device",
    "check_dwell",
    "check_number",
    "check_pair",
    "check_shape",
]

MAX_SHAPE = SCAN_SHAPE_MAX  # the scan generator's limit per axis (bluestem.instrument)
MAX_DWELL = DWELL_MAX  # s, the scan generator's limit
MAX_EXPOSURE = EXPOSURE_MAX  # s per internally triggered frame, the detector's limit


def check_number(
    name: str, value: Any, *, low: float, high: float, low_open: bool = False
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` if ``low_open``)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    ok = math.isfinite(x) and (x > low if low_open else x >= low) and x <= high
    if not ok or isinstance(value, bool):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name}={value!r}: allowed {bracket}{low:g}, {high:g}]")
    return x


def check_shape(value: Any, name: str = "shape", *, ndim: int = 2) -> tuple[int, ...]:
    """A scan shape: ``ndim`` integers in 1..``MAX_SHAPE`` (4096)."""
    if isinstance(value, int) and not isinstance(value, bool) and ndim == 1:
        value = (value,)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != ndim:
        raise ValueError(f"{name}={value!r}: allowed {ndim} integers, each 1..{MAX_SHAPE}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SHAPE:
            raise ValueError(f"{name}={value!r}: allowed {ndim} integers, each 1..{MAX_SHAPE}")
        out.append(int(v))
    return tuple(out)


def check_dwell(value: Any, name: str = "dwell") -> float:
    """Dwell (or exposure) per position in s: ``0 < dwell <= MAX_DWELL`` (1 s)."""
    return check_number(name, value, low=0.0, high=MAX_DWELL, low_open=True)


def check_pair(name: str, value: Any, *, low: float, high: float, low_open: bool = True):
    """A (y, x) pair of numbers (a scalar means both), each in the range."""
    if value is None:
        return None
    pair = (value, value) if not isinstance(value, Sequence) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name}={value!r}: allowed a number or a (y, x) pair")
    return tuple(check_number(name, v, low=low, high=high, low_open=low_open) for v in pair)


def check_device(name: str, device: Any, attrs: Sequence[str]) -> None:
    """Refuse a device argument that lacks one of ``attrs`` (naming what is missing)."""
    missing = [a for a in attrs if not hasattr(device, a)]
    if device is None or missing:
        raise ValueError(f"{name}={device!r}: allowed a device with {list(attrs)} "
                         f"(missing {missing})")  # fmt: skip
