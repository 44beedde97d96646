"""The reducer: feeds blocks of frames through the fused kernel into per-position totals."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np

from bluestem.reduce.kernels import fused_reduce
from bluestem.reduce.plan import Plan, build_plan
from bluestem.reduce.spec import ReductionSpec

__all__ = ["DTYPES", "ReducedPart", "Reducer"]

#: Supported frame dtypes.
DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.float32))
#: Frames per kernel call for uint8/uint16: keeps the uint32 sum parts exact
#: (65536 * 65535 < 2**32).
_EXACT_BLOCK = 65536
_NO_PART = (0, 0, 0)


def _lowest(dtype: np.dtype):
    return -np.inf if dtype.kind == "f" else 0


@dataclass(frozen=True)
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
    split; float32 frames: reproducible for a given split, and equal across splits up to
    float64 rounding). ``max_dp`` is exact; NaN pixels are ignored by it.

    The kernels release the GIL: :meth:`add` may run in a worker thread while another
    thread calls :meth:`images`. Concurrent :meth:`add` calls must cover disjoint
    positions (checked).
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
        self._lock = threading.Lock()
        self._totals = np.full((self._size, self._plan.ncols), np.nan)
        self._filled = np.zeros(self._size, bool)
        self._pending = np.zeros(self._size, bool)
        ky, kx = spec.frame_shape
        self._sum = np.zeros((ky, kx)) if spec.sum_dp else None
        self._max = np.full((ky, kx), -np.inf) if spec.max_dp else None

    @cached_property
    def _plan(self) -> Plan:
        return build_plan(self.spec)

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_plan")}
        state["_pending"] = np.zeros_like(self._pending)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

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

    def _reduce(self, frames: np.ndarray, totals: np.ndarray):
        """Run the kernel; returns this block's (sum, max) patterns in float64 or None."""
        plan, spec = self._plan, self.spec
        ky, kx = spec.frame_shape
        exact32 = frames.dtype.itemsize <= 2 and frames.dtype.kind == "u"
        block = _EXACT_BLOCK if exact32 else max(1, frames.shape[0])
        sums = np.zeros((ky, kx)) if spec.sum_dp else None
        maxes = np.full((ky, kx), -np.inf) if spec.max_dp else None
        for start in range(0, frames.shape[0], block):
            part = frames[start : start + block]
            chunks = max(1, min(numba.get_num_threads(), (part.shape[0] + 3) // 4))
            sum_parts = np.zeros(
                (chunks, ky, kx) if spec.sum_dp else _NO_PART,
                np.uint32 if exact32 else np.float64,
            )
            max_parts = np.full((chunks, ky, kx) if spec.max_dp else _NO_PART,
                                _lowest(frames.dtype), frames.dtype)  # fmt: skip
            fused_reduce(
                part, plan.weights, plan.kinds, plan.pack_w, plan.pack_out, plan.bounds,
                plan.den_col, plan.yw, totals[start : start + part.shape[0]],
                sum_parts, max_parts, exact32, chunks,
            )  # fmt: skip
            if sums is not None:
                sums += sum_parts.sum(axis=0, dtype=np.float64)
            if maxes is not None:
                np.maximum(maxes, max_parts.max(axis=0).astype(np.float64), out=maxes)
        return sums, maxes

    def add(self, first: int, frames: np.ndarray) -> None:
        """Reduce ``frames`` (n, ky, kx) for flat positions ``first .. first + n - 1``.

        Raises
        ------
        ValueError
            For a wrong frame shape or dtype (uint8, uint16, uint32, float32 allowed),
            positions outside the scan, or positions already reduced or in progress.
        """
        first, frames = self._check(first, frames)
        n = frames.shape[0]
        if n == 0:
            return
        span = slice(first, first + n)
        with self._lock:
            busy = self._filled[span] | self._pending[span]
            if busy.any():
                at = first + int(np.argmax(busy))
                raise ValueError(
                    f"position {at} (of frames {first}..{first + n - 1}) is already reduced "
                    "or being reduced; allowed: each position once"
                )
            self._pending[span] = True
        try:
            sums, maxes = self._reduce(frames, self._totals[span])
        except BaseException:
            with self._lock:
                self._pending[span] = False
            raise
        with self._lock:
            self._fold(sums, maxes)
            self._filled[span] = True
            self._pending[span] = False

    def _fold(self, sums, maxes) -> None:
        if self._sum is not None:
            self._sum += sums
        if self._max is not None:
            np.maximum(self._max, maxes, out=self._max)

    def partial(self, first: int, frames: np.ndarray) -> ReducedPart:
        """Reduce frames into a detached :class:`ReducedPart`; this reducer is unchanged.

        For distributed runs: reduce disjoint ranges anywhere, then :meth:`combine`.
        """
        first, frames = self._check(first, frames)
        totals = np.empty((frames.shape[0], self._plan.ncols))
        sums, maxes = self._reduce(frames, totals)
        positions = np.arange(first, first + frames.shape[0], dtype=np.int64)
        return ReducedPart(self.spec, self.scan_shape, positions, totals, sums, maxes)

    def to_part(self) -> ReducedPart:
        """Everything reduced so far, as a :class:`ReducedPart`."""
        with self._lock:
            positions = np.flatnonzero(self._filled).astype(np.int64)
            return ReducedPart(
                self.spec, self.scan_shape, positions, self._totals[positions].copy(),
                None if self._sum is None else self._sum.copy(),
                None if self._max is None else self._max.copy(),
            )  # fmt: skip

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
            busy = self._filled[part.positions] | self._pending[part.positions]
            if busy.any():
                raise ValueError(
                    f"position {int(part.positions[np.argmax(busy)])} is in two parts; "
                    "allowed: disjoint parts"
                )
            self._totals[part.positions] = part.totals
            self._filled[part.positions] = True
            self._fold(part.sum_dp, part.max_dp)

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
        spec, plan = self.spec, self._plan
        with self._lock:
            filled = self._filled.copy()
            sums = None if self._sum is None else self._sum.copy()
            maxes = None if self._max is None else self._max.copy()
        totals = self._totals
        out: dict[str, np.ndarray] = {}

        def scan_image(values: np.ndarray) -> np.ndarray:
            return np.where(filled, values, np.nan).reshape(self.scan_shape)

        for name, col in plan.detector_cols.items():
            out[name] = scan_image(totals[:, col])
        if spec.com:
            den = totals[:, plan.den_col]
            num_x = totals[:, plan.x_col] - plan.x_offset * den
            num_y = totals[:, -1]
            ok = filled & (den != 0)
            for axis, num in (("y", num_y), ("x", num_x)):
                com = np.full(self._size, np.nan)
                np.divide(num, den, out=com, where=ok)
                out[f"com_{axis}"] = com.reshape(self.scan_shape)
            if spec.angle_per_pixel is not None:
                for axis in "yx":
                    out[f"com_{axis}_mrad"] = out[f"com_{axis}"] * (spec.angle_per_pixel * 1e3)
        if sums is not None:
            out["sum_dp"] = sums
        if maxes is not None:
            maxes[np.isneginf(maxes)] = np.nan
            out["max_dp"] = maxes
        return out
