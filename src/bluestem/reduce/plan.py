"""The kernel plan: a spec turned into weight rows, packs and per-row column bounds.

Output columns of the kernel (one row per frame): the detector images in spec order,
then, with COM, the denominator ``sum(I)`` and the x numerator ``sum((c - ic) I)``
(``ic = round(cx)``, so the weights are small exact integers), and last the y numerator
``sum((r - cy) I)``. The x numerator is taken about ``ic`` because integer weights keep
float32 products of integer pixels exact and small; the reducer subtracts
``(cx - ic) * sum(I)`` in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bluestem.reduce.kernels import PACK_U1, PACK_U3, PACK_W1, PACK_W2, PACK_W4
from bluestem.reduce.spec import ReductionSpec

__all__ = ["Plan", "build_plan"]


@dataclass(frozen=True)
class Plan:
    """Arrays for :func:`bluestem.reduce.kernels.fused_reduce` (see its docstring)."""

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


def build_plan(spec: ReductionSpec) -> Plan:
    """The kernel arrays for ``spec``."""
    ky, kx = spec.frame_shape
    cy, cx = spec.centre
    masks = spec.masks()
    names = list(masks)
    rows: list[np.ndarray] = [masks[n] for n in names]  # weighted channels (col = index)
    detector_cols = {n: i for i, n in enumerate(names)}
    ncols = len(names)
    den_col = x_col = -1
    ic = round(cx)
    packs: list[tuple[int, list[int], list[int]]] = []  # kind, weight slots, output slots
    unit = False
    if spec.com:
        region = spec._com_region().astype(np.float32)
        xw = (np.arange(kx, dtype=np.float32) - np.float32(ic))[None, :] * region
        den_col, x_col = ncols, ncols + 1
        ncols += 2
        if spec.com_radius is None:
            # Whole-frame COM: a unit channel (plain sum, no weight loads) packed with x
            # and up to two detectors.
            unit = True
            rows.append(xw)
            xi = len(rows) - 1
            take = [0, 1] if len(names) >= 2 else []
            kind = PACK_U3 if take else PACK_U1
            packs.append((kind, [-1, xi, *take], [den_col, x_col, *take]))
            remaining = list(range(len(take), len(names)))
        else:
            rows += [region, xw]
            remaining = [*range(len(names)), len(rows) - 2, len(rows) - 1]
    else:
        remaining = list(range(len(names)))
    out_of = {i: i for i in range(len(names))}
    if spec.com and not unit:
        out_of[len(rows) - 2], out_of[len(rows) - 1] = den_col, x_col
    for size, kind in ((4, PACK_W4), (2, PACK_W2), (1, PACK_W1)):
        while len(remaining) >= size:
            chunk, remaining = remaining[:size], remaining[size:]
            packs.append((kind, chunk, [out_of[i] for i in chunk]))
    weights = np.ascontiguousarray(np.stack(rows) if rows else np.zeros((0, ky, kx)), np.float32)
    extents = [_extent(w) for w in weights]
    full = np.tile(np.array([[0, kx]], np.int64), (ky, 1))
    bounds, pack_w, pack_out = [], [], []
    for kind, wslots, oslots in packs:
        used = [extents[w] for w in wslots if w >= 0]
        if kind in (PACK_U1, PACK_U3):
            used.append(full)
        bounds.append(_union(used))
        pack_w.append(wslots + [0] * (4 - len(wslots)))
        pack_out.append(oslots + [0] * (4 - len(oslots)))
    return Plan(
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
