"""numba kernels of the noiseless model: projected potential and the sampling tables."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["build_alias", "stamp_potential", "tables_from_waves"]


@njit(nogil=True, cache=True, parallel=True)
def stamp_potential(
    origin_y, origin_x, dy, dx, out, field_y, field_x, nbins_y, nbins_x, bin_start,
    atom_y, atom_x, atom_w, atom_s, cutoff,
):  # fmt: skip
    """Add Gaussian columns of a periodic field of atoms to windows of projected potential.

    ``out[w]`` (ny, nx) gets ``sum_a w_a exp(-r**2 / (2 s_a**2))`` over the atoms (and
    their periodic images) within ``cutoff * max(s)`` of window ``w``, whose pixel (i, j)
    sits at ``(origin_y[w] + (i - ny // 2) dy, origin_x[w] + (j - nx // 2) dx)``. Atoms
    are sorted into ``nbins_y * nbins_x`` bins of the field (a cell list): bin ``b`` holds
    atoms ``bin_start[b] : bin_start[b + 1]``. Each Gaussian is separable and truncated,
    so one atom costs a few dozen pixels, not the whole window.
    """
    nw, ny, nx = out.shape
    bin_h = field_y / nbins_y
    bin_w = field_x / nbins_x
    smax = 0.0
    for a in range(atom_s.size):
        smax = max(smax, atom_s[a])
    margin = cutoff * smax
    for w in prange(nw):
        y0 = origin_y[w] - (ny // 2) * dy
        x0 = origin_x[w] - (nx // 2) * dx
        y1 = y0 + (ny - 1) * dy
        x1 = x0 + (nx - 1) * dx
        gy = np.empty(ny)
        gx = np.empty(nx)
        by_lo = math.floor((y0 - margin) / bin_h)
        by_hi = math.floor((y1 + margin) / bin_h)
        bx_lo = math.floor((x0 - margin) / bin_w)
        bx_hi = math.floor((x1 + margin) / bin_w)
        for by in range(by_lo, by_hi + 1):
            wy = by % nbins_y
            shift_y = ((by - wy) // nbins_y) * field_y
            for bx in range(bx_lo, bx_hi + 1):
                wx = bx % nbins_x
                shift_x = ((bx - wx) // nbins_x) * field_x
                b = wy * nbins_x + wx
                for a in range(bin_start[b], bin_start[b + 1]):
                    ya = atom_y[a] + shift_y
                    xa = atom_x[a] + shift_x
                    s = atom_s[a]
                    reach = cutoff * s
                    i_lo = max(0, math.ceil((ya - reach - y0) / dy))
                    i_hi = min(ny - 1, math.floor((ya + reach - y0) / dy))
                    j_lo = max(0, math.ceil((xa - reach - x0) / dx))
                    j_hi = min(nx - 1, math.floor((xa + reach - x0) / dx))
                    if i_lo > i_hi or j_lo > j_hi:
                        continue
                    inv = -0.5 / (s * s)
                    for i in range(i_lo, i_hi + 1):
                        d = y0 + i * dy - ya
                        gy[i] = atom_w[a] * math.exp(inv * d * d)
                    for j in range(j_lo, j_hi + 1):
                        d = x0 + j * dx - xa
                        gx[j] = math.exp(inv * d * d)
                    for i in range(i_lo, i_hi + 1):
                        g = gy[i]
                        for j in range(j_lo, j_hi + 1):
                            out[w, i, j] += g * gx[j]


@njit(nogil=True, cache=True)
def build_alias(weights, table):
    """Walker/Vose alias table of a non-negative weight vector, packed (in place).

    ``table`` is (n, 2) uint32: ``[threshold, alias]``, so one electron touches one cache
    line. Sampling: ``u = U * n; j = int(u)``; the outcome is ``j`` if
    ``(u - j) * 2**32 < threshold[j]``, else ``alias[j]``. Thresholds are the Vose
    probabilities rounded to 2**-32 (a relative error below 1e-9 on any pixel's
    probability); a probability of 1 is stored as alias = the pixel itself. Returns the
    total weight (0 leaves a table that always gives pixel 0).
    """
    n = weights.size
    prob = np.empty(n)
    alias = np.empty(n, dtype=np.int64)
    total = 0.0
    for i in range(n):
        total += weights[i]
    if total <= 0.0:
        for i in range(n):
            table[i, 0] = np.uint32(0xFFFFFFFF)
            table[i, 1] = np.uint32(0)
        return total
    scaled = np.empty(n)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    ns = 0
    nl = 0
    for i in range(n):
        scaled[i] = weights[i] * n / total
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        g = large[nl - 1]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            nl -= 1
            small[ns] = g
            ns += 1
    # What remains is 1 up to rounding: those pixels always keep their own index.
    for k in range(nl):
        prob[large[k]] = 1.0
        alias[large[k]] = large[k]
    for k in range(ns):
        prob[small[k]] = 1.0
        alias[small[k]] = small[k]
    for i in range(n):
        if prob[i] >= 1.0:
            table[i, 0] = np.uint32(0xFFFFFFFF)
            table[i, 1] = np.uint32(i)
        else:
            table[i, 0] = np.uint32(int(prob[i] * 4294967296.0))
            table[i, 1] = np.uint32(alias[i])
    return total


@njit(nogil=True, cache=True, parallel=True)
def tables_from_waves(waves, binning, slots, intensity, tables, totals):
    """Diffraction intensity of exit waves in k-space, binned, with its alias table.

    ``waves`` (n, ny, nx) complex in FFT order; slot ``slots[w]`` of ``intensity``
    (capacity, fy * fx) and ``tables`` (capacity, fy * fx, 2) gets the centred (fftshifted),
    binned ``|wave|**2`` normalised to a total of 1 over the full grid; ``totals[slot]``
    the sum over the delivered pixels (1 unless the grid total is zero).
    """
    n, ny, nx = waves.shape
    fy = ny // binning
    fx = nx // binning
    for w in prange(n):
        slot = slots[w]
        grand = 0.0
        for i in range(ny):
            for j in range(nx):
                v = waves[w, i, j]
                grand += v.real * v.real + v.imag * v.imag
        scale = 1.0 / grand if grand > 0 else 0.0
        row = intensity[slot]
        for p in range(fy * fx):
            row[p] = 0.0
        for i in range(ny):
            bi = ((i + ny // 2) % ny) // binning
            for j in range(nx):
                bj = ((j + nx // 2) % nx) // binning
                v = waves[w, i, j]
                row[bi * fx + bj] += (v.real * v.real + v.imag * v.imag) * scale
        totals[slot] = build_alias(row, tables[slot])
