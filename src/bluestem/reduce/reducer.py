"""The reducer: feeds blocks of frames through the fused kernel into per-position totals."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np

from bluestem.reduce.kernels import fused_reduce
from bluestem.reduce.layout import KernelLayout, build_layout
from bluestem.reduce.patterns import EXACT_FRAMES, PatternParts, exact32
from bluestem.reduce.spec import ReductionSpec

__all__ = ["DTYPES", "ReducedPart", "Reducer"]

#: Supported frame dtypes.
DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.float32))


@dataclass(frozen=True, eq=False)
class ReducedPart:
    """The result of reducing some frames, detached from any Reducer (picklable).

    Attributes
    ----------
    spec : ReductionSpec
    scan_shape : tuple of int
    positions : ndarray of int64
        Flat scan positions reduced.
    totals : ndarray, float64 (len(positions), ncols)
        The kernel's per-frame totals, row i for ``positions[i]``.
    sum_dp, max_dp : ndarray float64 (ky, kx) or None
        Sum and max pattern over these frames (max: -inf where no frame had a value).
    """

    spec: ReductionSpec
    scan_shape: tuple[int, int]
    positions: np.ndarray
    totals: np.ndarray
    sum_dp: np.ndarray | None
    max_dp: np.ndarray | None


class Reducer:
    """Reduces a 4D-STEM scan, block by block, to virtual images, COM and patterns.

    Parameters
    ----------
    spec : ReductionSpec
    scan_shape : tuple of int
        (ny, nx); frames are numbered row-major (x fastest). A plain series of n frames
        is the scan ``(1, n)``.

    Notes
    -----
    Each frame's images are a function of that frame alone, computed in a fixed order: a
    frame gives bit-for-bit the same values whatever block it arrives in, and
    :meth:`combine` of disjoint parts equals one reducer fed everything. ``sum_dp`` is
    accumulated in float64 (integer frames: exact, hence also bitwise independent of the
    split; float32 frames: equal across splits, and whenever :meth:`images` is read
    between blocks, only up to float64 rounding). ``max_dp`` is exact; NaN pixels are
    ignored by it.

    The kernels release the GIL: :meth:`add` may run in a worker thread while another
    thread calls :meth:`images` (which waits for a block in progress). Concurrent
    :meth:`add` calls are serialised (each kernel uses all cores anyway).
    """

    def __init__(self, spec: ReductionSpec, scan_shape: tuple[int, int]) -> None:
        if not isinstance(spec, ReductionSpec):
            raise TypeError(f"spec must be a ReductionSpec, got {type(spec).__name__}")
        try:
            shape = tuple(int(n) for n in scan_shape)
            exact = shape == tuple(scan_shape)
        except (TypeError, ValueError):
            shape, exact = (), False
        if not exact or len(shape) != 2 or min(shape) < 1:
            raise ValueError(
                f"scan_shape {scan_shape!r}; allowed: two integers (ny, nx) >= 1 "
                "(a series of n frames is (1, n))"
            )
        self.spec = spec
        self.scan_shape = shape
        self._size = shape[0] * shape[1]
        self._lock = threading.RLock()
        self._totals = np.full((self._size, self._layout.ncols), np.nan)
        self._filled = np.zeros(self._size, bool)
        self._patterns = PatternParts(spec.frame_shape, spec.sum_dp, spec.max_dp)

    @cached_property
    def _layout(self) -> KernelLayout:
        return build_layout(self.spec)

    def __getstate__(self) -> dict:
        with self._lock:
            self._patterns.fold()
            return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_layout")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def filled(self) -> np.ndarray:
        """(ny, nx) bool: the positions reduced so far (a copy)."""
        with self._lock:
            return self._filled.reshape(self.scan_shape).copy()

    @property
    def count(self) -> int:
        """Number of positions reduced so far."""
        with self._lock:
            return int(self._filled.sum())

    def _check(self, first, frames) -> tuple[int, np.ndarray]:
        if isinstance(first, bool) or not isinstance(first, int | np.integer):
            raise ValueError(f"first must be an integer scan index, got {first!r}")
        frames = np.asarray(frames)
        ky, kx = self.spec.frame_shape
        if frames.ndim != 3 or frames.shape[1:] != (ky, kx):
            raise ValueError(
                f"frames have shape {frames.shape}; allowed: (n, {ky}, {kx}) for the spec's "
                f"frame shape ({ky}, {kx})"
            )
        if frames.dtype not in DTYPES:
            raise ValueError(
                f"frames have dtype {frames.dtype}; allowed: {', '.join(map(str, DTYPES))}"
            )
        first, n = int(first), frames.shape[0]
        if first < 0 or first + n > self._size:
            raise ValueError(
                f"frames {first}..{first + n - 1} are outside the scan {self.scan_shape}; "
                f"allowed: 0 <= first and first + n <= {self._size}"
            )
        # One memory layout, hence one compiled kernel and one arithmetic order.
        return first, np.ascontiguousarray(frames)

    def _reduce(self, frames: np.ndarray, totals: np.ndarray, patterns: PatternParts) -> None:
        """Run the kernel over ``frames`` into ``totals`` rows and ``patterns``' parts."""
        layout = self._layout
        exact = exact32(frames.dtype)
        block = EXACT_FRAMES if exact else max(1, frames.shape[0])
        for start in range(0, frames.shape[0], block):
            part = frames[start : start + block]
            chunks = max(1, min(numba.get_num_threads(), (part.shape[0] + 3) // 4))
            sum_parts, max_parts = patterns.for_kernel(frames.dtype, part.shape[0], chunks)
            fused_reduce(
                part, layout.weights, layout.kinds, layout.pack_w, layout.pack_out, layout.bounds,
                layout.den_col, layout.yw, totals[start : start + part.shape[0]],
                sum_parts, max_parts, exact, chunks,
            )  # fmt: skip

    def add(self, first: int, frames: np.ndarray) -> None:
        """Reduce ``frames`` (n, ky, kx) for flat positions ``first .. first + n - 1``.

        Raises
        ------
        ValueError
            For a wrong frame shape or dtype (uint8, uint16, uint32, float32 allowed),
            positions outside the scan, or positions already reduced.
        """
        first, frames = self._check(first, frames)
        n = frames.shape[0]
        span = slice(first, first + n)
        # One lock for the whole call: the pattern parts are shared by successive blocks,
        # and a block of a scan row takes well under a millisecond.
        with self._lock:
            done = self._filled[span]
            if done.any():
                at = first + int(np.argmax(done))
                raise ValueError(
                    f"position {at} (of frames {first}..{first + n - 1}) is already reduced; "
                    "allowed: each position once"
                )
            self._reduce(frames, self._totals[span], self._patterns)
            self._filled[span] = True

    def partial(self, first: int, frames: np.ndarray) -> ReducedPart:
        """Reduce frames into a detached :class:`ReducedPart`; this reducer is unchanged.

        For distributed runs: reduce disjoint ranges anywhere, then :meth:`combine`.
        """
        first, frames = self._check(first, frames)
        totals = np.empty((frames.shape[0], self._layout.ncols))
        spec = self.spec
        patterns = PatternParts(spec.frame_shape, spec.sum_dp, spec.max_dp)
        self._reduce(frames, totals, patterns)
        sums, maxes = patterns.result()
        positions = np.arange(first, first + frames.shape[0], dtype=np.int64)
        return ReducedPart(spec, self.scan_shape, positions, totals, sums, maxes)

    def to_part(self) -> ReducedPart:
        """Everything reduced so far, as a :class:`ReducedPart`."""
        with self._lock:
            positions = np.flatnonzero(self._filled).astype(np.int64)
            sums, maxes = self._patterns.result()
            return ReducedPart(
                self.spec, self.scan_shape, positions, self._totals[positions].copy(), sums, maxes
            )

    def merge(self, part: ReducedPart | Reducer) -> None:
        """Fold a part (or another reducer's results) into this reducer.

        Raises
        ------
        ValueError
            If the spec or scan shape differ, or a position is already reduced here.
        """
        if isinstance(part, Reducer):
            part = part.to_part()
        if not isinstance(part, ReducedPart):
            raise TypeError(f"can merge a ReducedPart or Reducer, got {type(part).__name__}")
        if part.spec != self.spec:
            raise ValueError(
                f"part has spec {part.spec.digest()[:12]}; allowed: this reducer's spec "
                f"{self.spec.digest()[:12]}"
            )
        if part.scan_shape != self.scan_shape:
            raise ValueError(f"part has scan shape {part.scan_shape}; allowed: {self.scan_shape}")
        with self._lock:
            busy = self._filled[part.positions]
            if busy.any():
                raise ValueError(
                    f"position {int(part.positions[np.argmax(busy)])} is in two parts; "
                    "allowed: disjoint parts"
                )
            self._totals[part.positions] = part.totals
            self._filled[part.positions] = True
            self._patterns.merge(part.sum_dp, part.max_dp)

    @classmethod
    def combine(cls, parts: Iterable[ReducedPart | Reducer]) -> Reducer:
        """A new reducer holding disjoint parts (ReducedPart or Reducer) together.

        The result is bitwise identical to one reducer fed all the frames in order.
        """
        parts = list(parts)
        if not parts:
            raise ValueError("combine needs at least one part")
        head = parts[0]
        out = cls(head.spec, head.scan_shape)
        for part in parts:
            out.merge(part)
        return out

    def images(self) -> dict[str, np.ndarray]:
        """The reduced images (float64 copies).

        Returns
        -------
        dict
            One (ny, nx) image per detector image name; ``com_y``, ``com_x`` (pixels,
            relative to the spec's centre; NaN where the frame's COM sum is 0) and
            ``com_y_mrad``, ``com_x_mrad`` when the spec has ``angle_per_pixel``; positions
            not yet reduced are NaN. ``sum_dp`` and ``max_dp`` (ky, kx) when enabled
            (``max_dp`` is NaN where no frame gave a value, e.g. before the first frame).
        """
        with self._lock:
            return self._images()

    def _images(self) -> dict[str, np.ndarray]:
        spec, layout, totals = self.spec, self._layout, self._totals
        filled = self._filled
        out: dict[str, np.ndarray] = {}

        def scan_image(values: np.ndarray) -> np.ndarray:
            return np.where(filled, values, np.nan).reshape(self.scan_shape)

        for name, col in layout.detector_cols.items():
            out[name] = scan_image(totals[:, col])
        if spec.com:
            den = totals[:, layout.den_col]
            num_x = totals[:, layout.x_col] - layout.x_offset * den
            num_y = totals[:, -1]
            ok = filled & (den != 0)
            for axis, num in (("y", num_y), ("x", num_x)):
                com = np.full(self._size, np.nan)
                np.divide(num, den, out=com, where=ok)
                out[f"com_{axis}"] = com.reshape(self.scan_shape)
            if spec.angle_per_pixel is not None:
                for axis in "yx":
                    out[f"com_{axis}_mrad"] = out[f"com_{axis}"] * (spec.angle_per_pixel * 1e3)
        sums, maxes = self._patterns.result()
        if sums is not None:
            out["sum_dp"] = sums
        if maxes is not None:
            maxes[np.isneginf(maxes)] = np.nan
            out["max_dp"] = maxes
        return out
