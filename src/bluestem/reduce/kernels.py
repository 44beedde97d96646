"""numba kernels of the fused reduction: virtual detectors, COM, sum and max patterns.

One pass over a block of frames computes everything. Frames are taken four at a time
(a *group*): every weight row loaded from cache serves four frames. The weighted channels
(detector masks, and the two COM channels) are taken in *packs* of up to four, so each
pixel is converted to float32 once per pack rather than once per channel. Within a
detector row the products are summed in float32 (vectorised, over at most a few hundred
pixels, so the rounding stays near 1e-7); rows are summed in float64.

Determinism: a frame's totals depend only on its own pixels and the layout (the packs and
their row bounds). The four frames of a group run through identical, independent
accumulators, and a short last group is padded by repeating its last frame (whose
duplicate results are discarded), so a frame gets bit-for-bit the same totals whatever
block it arrives in and wherever it sits in the block.

Pack kinds (``PACK_*``): a pack with a *unit* channel sums the plain pixel values for
that channel (the COM denominator over the whole frame) without loading weights. Only two
kinds of four slots exist (a layout pads a short pack with an all-zero weight row): each
inlined row loop adds seconds of compilation per frame dtype, and inlining them is worth
about 7 % of throughput.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from bluestem.reduce._prefetch import prefetch

__all__ = ["PACK_U3", "PACK_W4", "fused_reduce", "parallel_sum"]

#: A unit channel + 3 weighted channels.
PACK_U3 = 0
#: 4 weighted channels.
PACK_W4 = 1

# Reassociation lets LLVM vectorise the float32 row sums; no-NaN/no-inf flags are left out
# so NaN pixels, comparisons and the max pattern keep IEEE semantics.
_FM = {"reassoc", "contract", "nsz"}
_F32 = np.float32
#: How far ahead (bytes of a frame) rows are prefetched.
_PREFETCH_BYTES = 2048


# Each row helper slices its rows to [c0, c1) and loops from 0: with a loop index that is
# provably non-negative, numba's negative-index wraparound disappears and LLVM emits
# plain vector loads (with range(c0, c1) it emitted gathers, 5x slower).


@njit(nogil=True, cache=True, fastmath=_FM, inline="always")
def _row_w4(wa, wb, wc, wd, p0, p1, p2, p3, c0, c1):
    wa, wb, wc, wd = wa[c0:c1], wb[c0:c1], wc[c0:c1], wd[c0:c1]
    p0, p1, p2, p3 = p0[c0:c1], p1[c0:c1], p2[c0:c1], p3[c0:c1]
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = _F32(0.0)
    e0 = e1 = e2 = e3 = d0 = d1 = d2 = d3 = _F32(0.0)
    for c in range(wa.shape[0]):
        v0, v1, v2, v3 = _F32(p0[c]), _F32(p1[c]), _F32(p2[c]), _F32(p3[c])
        w = wa[c]
        a0 += w * v0
        a1 += w * v1
        a2 += w * v2
        a3 += w * v3
        w = wb[c]
        b0 += w * v0
        b1 += w * v1
        b2 += w * v2
        b3 += w * v3
        w = wc[c]
        e0 += w * v0
        e1 += w * v1
        e2 += w * v2
        e3 += w * v3
        w = wd[c]
        d0 += w * v0
        d1 += w * v1
        d2 += w * v2
        d3 += w * v3
    return a0, a1, a2, a3, b0, b1, b2, b3, e0, e1, e2, e3, d0, d1, d2, d3


@njit(nogil=True, cache=True, fastmath=_FM, inline="always")
def _row_u3(wb, wc, wd, p0, p1, p2, p3, c0, c1):
    wb, wc, wd = wb[c0:c1], wc[c0:c1], wd[c0:c1]
    p0, p1, p2, p3 = p0[c0:c1], p1[c0:c1], p2[c0:c1], p3[c0:c1]
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = _F32(0.0)
    e0 = e1 = e2 = e3 = d0 = d1 = d2 = d3 = _F32(0.0)
    for c in range(wb.shape[0]):
        v0, v1, v2, v3 = _F32(p0[c]), _F32(p1[c]), _F32(p2[c]), _F32(p3[c])
        # The unit channel is a plain add: no weight load, and the adds can issue on the
        # ports the FMAs leave free.
        a0 += v0
        a1 += v1
        a2 += v2
        a3 += v3
        w = wb[c]
        b0 += w * v0
        b1 += w * v1
        b2 += w * v2
        b3 += w * v3
        w = wc[c]
        e0 += w * v0
        e1 += w * v1
        e2 += w * v2
        e3 += w * v3
        w = wd[c]
        d0 += w * v0
        d1 += w * v1
        d2 += w * v2
        d3 += w * v3
    return a0, a1, a2, a3, b0, b1, b2, b3, e0, e1, e2, e3, d0, d1, d2, d3


# Left to LLVM to inline: inlining it in numba IR (8 call sites) cost 1.5 s of compilation
# per dtype for no speed.
@njit(nogil=True, cache=True)
def _add4(acc, q, ycol, yr, is_den, t0, t1, t2, t3):
    """Add one channel's row sums of the four frames to the float64 totals."""
    acc[q, 0] += np.float64(t0)
    acc[q, 1] += np.float64(t1)
    acc[q, 2] += np.float64(t2)
    acc[q, 3] += np.float64(t3)
    if is_den:
        # The COM y numerator: y is constant along a detector row, so it weights the
        # row sum of the denominator channel in float64.
        acc[ycol, 0] += yr * np.float64(t0)
        acc[ycol, 1] += yr * np.float64(t1)
        acc[ycol, 2] += yr * np.float64(t2)
        acc[ycol, 3] += yr * np.float64(t3)


@njit(nogil=True, cache=True, fastmath=_FM)
def _sum_row(srow, p0, p1, p2, p3, nvalid, exact32):
    kx = srow.shape[0]
    if exact32:
        # uint8/uint16 into a uint32 row: exact, and integer adds on 8 lanes are cheaper
        # than conversions to float64.
        if nvalid == 4:
            for c in range(kx):
                srow[c] += (np.uint32(p0[c]) + np.uint32(p1[c])) + (
                    np.uint32(p2[c]) + np.uint32(p3[c])
                )
        else:
            for c in range(kx):
                srow[c] += np.uint32(p0[c])
            if nvalid > 1:
                for c in range(kx):
                    srow[c] += np.uint32(p1[c])
            if nvalid > 2:
                for c in range(kx):
                    srow[c] += np.uint32(p2[c])
    elif nvalid == 4:
        for c in range(kx):
            srow[c] += (np.float64(p0[c]) + np.float64(p1[c])) + (
                np.float64(p2[c]) + np.float64(p3[c])
            )
    else:
        for c in range(kx):
            srow[c] += np.float64(p0[c])
        if nvalid > 1:
            for c in range(kx):
                srow[c] += np.float64(p1[c])
        if nvalid > 2:
            for c in range(kx):
                srow[c] += np.float64(p2[c])


@njit(nogil=True, cache=True)
def _max_row(mrow, p0, p1, p2, p3):
    # In the frames' own dtype: exact, and 16 uint16 lanes per instruction. Padded slots
    # repeat a valid frame, so they cannot change the maximum; a NaN pixel never compares
    # greater, so it is ignored.
    for c in range(mrow.shape[0]):
        a = p0[c] if p0[c] > p1[c] else p1[c]
        b = p2[c] if p2[c] > p3[c] else p3[c]
        m = a if a > b else b
        if m > mrow[c]:
            mrow[c] = m


@njit(nogil=True, cache=True, inline="always")
def _prefetch_ahead(frames, f, r):
    """Prefetch row r of the group's four frames (past the last row: the next group's)."""
    n, ky, _ = frames.shape
    if r >= ky:
        r -= ky
        f += 4
    if f + 3 < n:
        step = max(1, 64 // frames.itemsize)
        for s in range(4):
            row = frames[f + s, r]
            for c in range(0, row.shape[0], step):
                prefetch(row, c)


@njit(nogil=True, cache=True, fastmath=_FM, parallel=True)
def fused_reduce(
    frames, weights, kinds, pack_w, pack_out, bounds, den_col, yw, out,
    sum_parts, max_parts, exact32, nchunks,
):  # fmt: skip
    """Reduce a block of frames in one pass.

    Parameters
    ----------
    frames : (n, ky, kx) uint8, uint16, uint32 or float32, C-contiguous
    weights : (nw, ky, kx) float32
        Weight rows of the weighted channels.
    kinds : (P,) int64
        ``PACK_*`` kind of each pack.
    pack_w, pack_out : (P, 4) int64
        Per pack slot: the weight index and the output column (slot 0 of a unit pack
        has no weight).
    bounds : (P, ky, 2) int64
        Column range [c0, c1) of each pack on each row (the union of its channels'
        non-zero weights); c1 <= c0 skips the row.
    den_col : int
        Output column of the COM denominator channel, or -1.
    yw : (ky,) float64
        Row coordinate relative to the centre, ``r - cy``.
    out : (n, Q + 1) float64
        Channel totals; column Q receives the y-weighted denominator.
    sum_parts : (nchunks, ky, kx) uint32 (uint8/uint16 frames) or float64, zeros
        Per-chunk sum patterns, added to; shape (0, 0, 0) skips them. A uint32 part is
        exact for up to 65536 uint16 frames (``patterns.PatternParts`` folds before).
    max_parts : (nchunks, ky, kx) of the frames' dtype
        Per-chunk max patterns (start: the dtype's lowest value), updated; (0, 0, 0)
        skips them.
    exact32 : bool
        True for uint8/uint16 frames, whose sums go to uint32 parts.
    nchunks : int
        Parallel chunks (>= 1); chunk k owns ``sum_parts[k]`` and ``max_parts[k]``.
    """
    n, ky, _ = frames.shape
    npack = kinds.shape[0]
    ncol = out.shape[1]
    ycol = ncol - 1
    do_sum = sum_parts.shape[0] > 0
    do_max = max_parts.shape[0] > 0
    ngroups = (n + 3) // 4
    ahead = max(1, _PREFETCH_BYTES // (frames.shape[2] * frames.itemsize))
    for k in prange(nchunks):
        g0 = k * ngroups // nchunks
        g1 = (k + 1) * ngroups // nchunks
        acc = np.zeros((ncol, 4), np.float64)
        for g in range(g0, g1):
            f = 4 * g
            nvalid = min(4, n - f)
            i1 = min(f + 1, n - 1)
            i2 = min(f + 2, n - 1)
            i3 = min(f + 3, n - 1)
            acc[:] = 0.0
            for r in range(ky):
                p0, p1, p2, p3 = frames[f, r], frames[i1, r], frames[i2, r], frames[i3, r]
                yr = yw[r]
                _prefetch_ahead(frames, f, r + ahead)
                for p in range(npack):
                    c0 = bounds[p, r, 0]
                    c1 = bounds[p, r, 1]
                    if c1 <= c0:
                        continue
                    kind = kinds[p]
                    w = pack_w[p]
                    o = pack_out[p]
                    if kind == PACK_U3:
                        t = _row_u3(weights[w[1], r], weights[w[2], r], weights[w[3], r],
                                    p0, p1, p2, p3, c0, c1)  # fmt: skip
                        _add4(acc, o[0], ycol, yr, o[0] == den_col, t[0], t[1], t[2], t[3])
                        _add4(acc, o[1], ycol, yr, o[1] == den_col, t[4], t[5], t[6], t[7])
                        _add4(acc, o[2], ycol, yr, o[2] == den_col, t[8], t[9], t[10], t[11])
                        _add4(acc, o[3], ycol, yr, o[3] == den_col, t[12], t[13], t[14], t[15])
                    else:
                        t = _row_w4(weights[w[0], r], weights[w[1], r], weights[w[2], r],
                                    weights[w[3], r], p0, p1, p2, p3, c0, c1)  # fmt: skip
                        _add4(acc, o[0], ycol, yr, o[0] == den_col, t[0], t[1], t[2], t[3])
                        _add4(acc, o[1], ycol, yr, o[1] == den_col, t[4], t[5], t[6], t[7])
                        _add4(acc, o[2], ycol, yr, o[2] == den_col, t[8], t[9], t[10], t[11])
                        _add4(acc, o[3], ycol, yr, o[3] == den_col, t[12], t[13], t[14], t[15])
                if do_sum:
                    _sum_row(sum_parts[k, r], p0, p1, p2, p3, nvalid, exact32)
                if do_max:
                    _max_row(max_parts[k, r], p0, p1, p2, p3)
            for s in range(nvalid):
                for q in range(ncol):
                    out[f + s, q] = acc[q, s]


@njit(nogil=True, cache=True, fastmath=_FM, parallel=True)
def parallel_sum(a):
    """Sum of a 1-D float64 array over all threads: the memory-read baseline."""
    total = 0.0
    for i in prange(a.shape[0]):
        total += a[i]
    return total
