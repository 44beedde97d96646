"""Validation of settings written to the simulated instrument.

Every check raises :class:`InvalidSetting` whose message names the PV, the value and
what is allowed, so the same text can be returned to the CA client (the put fails), shown
in the group's status message and in ``STATUS:Message``.  Nothing here knows about CA.
"""

from __future__ import annotations

import math
import numbers
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bluestem.instrument import SCAN_SHAPE_MAX

__all__ = [
    "MAX_SCAN",
    "InvalidSetting",
    "Limits",
    "check_choice",
    "check_directory",
    "check_enum",
    "check_free_space",
    "check_limits",
    "estimate_file_bytes",
]

#: Most scan positions per axis (``SCAN:ShapeX``/``ShapeY``).
MAX_SCAN = SCAN_SHAPE_MAX
# Room kept free on the data disk on top of the file itself, for HDF5 metadata and the
# rest of the system: a capture that would leave less is refused.
DISK_MARGIN = 64 * 1024**2


class InvalidSetting(ValueError):
    """A write that the instrument refuses; ``pv`` is the PV name without prefix."""

    def __init__(self, pv: str, message: str):
        super().__init__(f"{pv}: {message}")
        self.pv = pv


@dataclass(frozen=True)
class Limits:
    """Allowed range of a numeric setting.

    ``low``/``high`` are inclusive unless ``low_open``/``high_open`` is set; ``None`` means
    unbounded.  ``integer`` refuses non-integral values.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        """The range as a human reads it, e.g. ``0 < x <= 1`` (ASCII: CA strings are latin-1)."""
        parts = []
        if self.low is not None:
            parts.append(f"{_fmt(self.low)} {'<' if self.low_open else '<='} ")
        parts.append("x")
        if self.high is not None:
            parts.append(f" {'<' if self.high_open else '<='} {_fmt(self.high)}")
        text = "".join(parts)
        return f"{text}, integer" if self.integer else text


def _fmt(value: float) -> str:
    return f"{value:g}"


def check_limits(pv: str, value: float, limits: Limits, units: str = "") -> float:
    """Return ``value`` if it lies in ``limits``, else raise :class:`InvalidSetting`."""
    unit = f" {units}" if units else ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidSetting(
            pv, f"{value!r} is not a number (allowed {limits.describe()}{unit})"
        ) from None
    bad = not math.isfinite(number)
    if limits.low is not None:
        bad |= number <= limits.low if limits.low_open else number < limits.low
    if limits.high is not None:
        bad |= number >= limits.high if limits.high_open else number > limits.high
    if limits.integer and not bad:
        bad = number != round(number)
    if bad:
        raise InvalidSetting(
            pv, f"{_fmt(number)}{unit} is out of range (allowed {limits.describe()}{unit})"
        )
    return value


def check_enum(pv: str, value: object, choices: Sequence[str]) -> str:
    """Return the enum string for ``value`` (a string or an index into ``choices``)."""
    if isinstance(value, list | tuple | np.ndarray) and len(value) == 1:
        value = value[0]
    if isinstance(value, bytes | np.bytes_):
        value = bytes(value).decode("latin-1")
    if isinstance(value, str) and value in choices:
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if float(value).is_integer() and 0 <= int(value) < len(choices):
            return choices[int(value)]
        value = float(value) if not float(value).is_integer() else int(value)
    elif isinstance(value, np.generic):
        value = value.item()
    allowed = ", ".join(f"{i}={c!r}" for i, c in enumerate(choices))
    raise InvalidSetting(pv, f"{value!r} is not one of the allowed values ({allowed})")


def check_choice(pv: str, value: float, choices: Sequence[int]) -> int:
    """Return ``int(value)`` if it is one of ``choices`` (e.g. binning 1, 2, 4)."""
    if value not in choices or value != int(value):
        allowed = ", ".join(str(c) for c in choices)
        raise InvalidSetting(pv, f"{value!r} is not allowed (allowed: {allowed})")
    return int(value)


def check_directory(pv: str, path: str) -> str:
    """Return ``path`` if it is an existing, writable directory."""
    if not path:
        raise InvalidSetting(pv, "empty path (an existing, writable directory is required)")
    if not os.path.isdir(path):
        raise InvalidSetting(pv, f"{path!r} does not exist or is not a directory")
    # Really try: permission bits say nothing for root or on read-only/virtual file systems.
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise InvalidSetting(pv, f"{path!r} is not writable ({exc.strerror})") from None
    return path


def estimate_file_bytes(n_frames: int, frame_shape: Sequence[int], itemsize: int) -> int:
    """Upper bound of the raw-frame file size (uncompressed, plus the received map)."""
    per_frame = int(frame_shape[0]) * int(frame_shape[1]) * int(itemsize)
    return n_frames * (per_frame + 1)


def check_free_space(pv: str, directory: str, needed: int) -> int:
    """Raise if ``directory`` has less than ``needed`` bytes (+ a margin) free."""
    free = shutil.disk_usage(directory).free
    if needed + DISK_MARGIN > free:
        raise InvalidSetting(
            pv,
            f"the file would need {needed / 1e9:.3g} GB but only {free / 1e9:.3g} GB is free "
            f"in {directory!r} (allowed: at most {max(free - DISK_MARGIN, 0) / 1e9:.3g} GB)",
        )
    return free
