"""Sum and max diffraction patterns: per-thread kernel parts, folded into float64 lazily.

The kernel adds each block into per-chunk parts (one per parallel chunk, so threads never
share a row). Folding the parts into the float64 result costs a pass over
``chunks * ky * kx`` values, which a scan row of frames would feel; so the parts persist
across blocks and are folded only when read, when the frame dtype changes, or before a
uint32 part could overflow.

Sums of uint8/uint16 frames go to uint32 parts (exact: at most 65536 frames of values below
2**16 between folds); uint32 and float32 frames to float64 parts. Max parts keep the
frames' own dtype, so they are exact too.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EXACT_FRAMES", "PatternParts"]

#: Frames a uint32 sum part takes before it must be folded (65536 * 65535 < 2**32).
EXACT_FRAMES = 65536
_NO_PART = (0, 0, 0)


def exact32(dtype: np.dtype) -> bool:
    """Whether frames of ``dtype`` sum into uint32 parts."""
    return dtype.kind == "u" and dtype.itemsize <= 2


class PatternParts:
    """Float64 sum and max patterns plus the kernel's pending per-chunk parts.

    Parameters
    ----------
    frame_shape : tuple of int
    do_sum, do_max : bool
    """

    def __init__(self, frame_shape: tuple[int, int], do_sum: bool, do_max: bool) -> None:
        self.frame_shape = tuple(frame_shape)
        self.sum = np.zeros(frame_shape) if do_sum else None
        self.max = np.full(frame_shape, -np.inf) if do_max else None
        self._dtype: np.dtype | None = None
        self._sum_parts = self._max_parts = None
        self._chunks = 0
        self._pending = 0

    def for_kernel(self, dtype: np.dtype, frames: int, chunks: int):
        """(sum_parts, max_parts) of ``chunks`` rows for a kernel call on ``frames`` frames
        of ``dtype`` (at most EXACT_FRAMES); zero-size arrays for a disabled pattern."""
        if dtype != self._dtype or (exact32(dtype) and self._pending + frames > EXACT_FRAMES):
            self.fold()
        ky, kx = self.frame_shape
        if self._dtype is None or self._chunks < chunks:
            self.fold()
            self._dtype, self._chunks = dtype, chunks
            sum_type = np.uint32 if exact32(dtype) else np.float64
            low = -np.inf if dtype.kind == "f" else 0
            self._sum_parts = np.zeros((chunks, ky, kx) if self.sum is not None else _NO_PART,
                                       sum_type)  # fmt: skip
            self._max_parts = np.full((chunks, ky, kx) if self.max is not None else _NO_PART,
                                      low, dtype)  # fmt: skip
        self._pending += frames
        s, m = self._sum_parts, self._max_parts
        return (s[:chunks] if s.shape[0] else s), (m[:chunks] if m.shape[0] else m)

    def fold(self) -> None:
        """Fold pending parts into the float64 patterns (exact for integer frames)."""
        if self._dtype is None:
            return
        if self.sum is not None:
            self.sum += self._sum_parts.sum(axis=0, dtype=np.float64)
        if self.max is not None:
            np.maximum(self.max, self._max_parts.max(axis=0).astype(np.float64), out=self.max)
        self._dtype = self._sum_parts = self._max_parts = None
        self._chunks = self._pending = 0

    def merge(self, sums: np.ndarray | None, maxes: np.ndarray | None) -> None:
        """Add another accumulator's float64 patterns."""
        if self.sum is not None:
            self.sum += sums
        if self.max is not None:
            np.maximum(self.max, maxes, out=self.max)

    def result(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Copies of the float64 (sum, max) patterns, parts folded in first."""
        self.fold()
        return (
            None if self.sum is None else self.sum.copy(),
            None if self.max is None else self.max.copy(),
        )
