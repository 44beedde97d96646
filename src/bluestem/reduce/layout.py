"""The kernel layout: a spec turned into weight rows, packs and per-row column bounds.

Output columns of the kernel (one row per frame): the detector images in spec order,
then, with COM, the denominator ``sum(I)`` and the x numerator ``sum((c - ic) I)``
(``ic = round(cx)``, so the weights are small exact integers), a scratch column for
padded pack slots, and last the y numerator ``sum((r - cy) I)``. The x numerator is
taken about ``ic`` because integer weights keep float32 products of integer pixels exact
and small; the reducer subtracts ``(cx - ic) * sum(I)`` in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bluestem.reduce.kernels import PACK_U3, PACK_W4
from bluestem.reduce.spec import ReductionSpec

__all__ = ["KernelLayout", "build_layout"]


@dataclass(frozen=True)
class KernelLayout:
    """Arrays for :func:`bluestem.reduce.kernels.fused_reduce` (see its docstring): where
    each weight row, pack and output column of the fused kernel lies."""

    weights: np.ndarray
    kinds: np.ndarray
    pack_w: np.ndarray
    pack_out: np.ndarray
    bounds: np.ndarray
    den_col: int
    x_col: int
    yw: np.ndarray
    x_offset: float
    ncols: int
    detector_cols: dict[str, int]


def _extent(rows: np.ndarray) -> np.ndarray:
    """(ky, 2) column range [c0, c1) of the non-zero weights of each row (c1 = c0 if none)."""
    kx = rows.shape[1]
    nz = rows != 0
    anyrow = nz.any(axis=1)
    first = np.where(anyrow, nz.argmax(axis=1), 0)
    last = np.where(anyrow, kx - nz[:, ::-1].argmax(axis=1), 0)
    return np.stack([first, last], axis=1).astype(np.int64)


def _union(extents: list[np.ndarray]) -> np.ndarray:
    out = np.zeros_like(extents[0])
    empty = np.ones(len(out), bool)
    for e in extents:
        has = e[:, 1] > e[:, 0]
        out[:, 0] = np.where(has & (empty | (e[:, 0] < out[:, 0])), e[:, 0], out[:, 0])
        out[:, 1] = np.where(has & (empty | (e[:, 1] > out[:, 1])), e[:, 1], out[:, 1])
        empty &= ~has
    return out


def build_layout(spec: ReductionSpec) -> KernelLayout:
    """The kernel layout of ``spec``: its weight rows, packs, bounds and output columns."""
    ky, kx = spec.frame_shape
    cy, cx = spec.centre
    masks = spec.masks()
    names = list(masks)
    detector_cols = {n: i for i, n in enumerate(names)}
    rows: list[np.ndarray] = [masks[n] for n in names]  # weight row i -> output column i
    out_of = list(range(len(names)))
    den_col = x_col = -1
    ncols = len(names)
    ic = round(cx)
    packs: list[tuple[int, list[int], list[int]]] = []  # (kind, weight rows, output columns)
    weighted = list(range(len(names)))
    if spec.com:
        region = spec._com_region().astype(np.float32)
        xw = (np.arange(kx, dtype=np.float32) - np.float32(ic))[None, :] * region
        den_col, x_col = ncols, ncols + 1
        ncols += 2
        if spec.com_radius is None and spec.com_mask is None:
            # Whole-frame COM: the unit channel (a plain sum, no weight loads), packed
            # with x and the first two detectors.
            rows.append(xw)
            out_of.append(x_col)
            head, weighted = weighted[:2], weighted[2:]
            packs.append((PACK_U3, [-1, len(rows) - 1, *head], [den_col, x_col, *head]))
        else:
            rows += [region, xw]
            out_of += [den_col, x_col]
            weighted += [len(rows) - 2, len(rows) - 1]
    for start in range(0, len(weighted), 4):
        chunk = weighted[start : start + 4]
        packs.append((PACK_W4, chunk, [out_of[i] for i in chunk]))
    # Short packs are padded with an all-zero weight row (it widens no bounds) whose sums
    # land in a scratch column.
    zero, scratch = len(rows), ncols
    rows.append(np.zeros((ky, kx), np.float32))
    ncols += 1
    weights = np.ascontiguousarray(np.stack(rows), np.float32)
    extents = [_extent(w) for w in weights]
    full = np.tile(np.array([[0, kx]], np.int64), (ky, 1))
    bounds, pack_w, pack_out = [], [], []
    for kind, wrows, cols in packs:
        pad = 4 - len(wrows)
        wrows, cols = [*wrows, *[zero] * pad], [*cols, *[scratch] * pad]
        used = [extents[w] for w in wrows if w >= 0]
        if kind == PACK_U3:
            used.append(full)
        bounds.append(_union(used))
        pack_w.append(wrows)
        pack_out.append(cols)
    return KernelLayout(
        weights=weights,
        kinds=np.array([p[0] for p in packs], np.int64),
        pack_w=np.array(pack_w, np.int64).reshape(-1, 4),
        pack_out=np.array(pack_out, np.int64).reshape(-1, 4),
        bounds=np.array(bounds, np.int64).reshape(-1, ky, 2),
        den_col=den_col,
        x_col=x_col,
        yw=np.arange(ky, dtype=np.float64) - cy,
        x_offset=cx - ic,
        ncols=ncols + 1,
        detector_cols=detector_cols,
    )
