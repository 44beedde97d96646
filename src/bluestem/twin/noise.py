"""numba kernels of the counting noise: a counter-based RNG, Poisson samplers, frames.

Every frame draws from its own stream, seeded from (seed, flat frame index) by splitmix64
mixing, so a frame never depends on which block or thread renders it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["mix_seed", "poisson", "render_frames"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53
#: Below this mean a pixel is drawn by inversion, above it by PTRS.
_INVERSION_LIMIT = 10.0
#: Placement of electrons is chosen while the expected electrons per pixel stay below this.
PLACEMENT_LIMIT = 1.0


@njit(nogil=True, cache=True, inline="always")
def _mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(nogil=True, cache=True)
def mix_seed(seed, index):
    """Starting state of the stream of frame ``index`` under ``seed`` (both uint64)."""
    return _mix(_mix(seed + _GOLDEN) ^ (index * _GOLDEN + _M2))


@njit(nogil=True, cache=True, inline="always")
def _uniform(state):
    """(new state, uniform double in [0, 1)) — splitmix64 as a generator."""
    state = state + _GOLDEN
    return state, (_mix(state) >> _S11) * _TO_UNIT


@njit(nogil=True, cache=True)
def poisson(state, lam):
    """(new state, Poisson(lam) deviate): inversion below 10, Hörmann's PTRS above."""
    if lam <= 0.0:
        return state, 0
    if lam < _INVERSION_LIMIT:
        state, u = _uniform(state)
        p = math.exp(-lam)
        cdf = p
        k = 0
        while u > cdf and k < 1000:
            k += 1
            p *= lam / k
            cdf += p
            if p == 0.0:
                break
        return state, k
    # Transformed rejection with squeeze (Hörmann 1993), as numpy's random_poisson_ptrs.
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        state, u = _uniform(state)
        u -= 0.5
        state, v = _uniform(state)
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return state, int(k)
        if k < 0 or (us < 0.013 and v > us):
            continue
        if (math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b)) <= (
            -lam + k * loglam - math.lgamma(k + 1.0)
        ):
            return state, int(k)


@njit(nogil=True, cache=True, parallel=True)
def render_frames(intensity, tables, totals, slots, order, indices, seed, dose, max_count, out):
    """Poisson frames: ``out[f]`` ~ Poisson(dose * intensity[slots[f]]), clipped.

    A frame whose expected electrons per pixel stay below ``PLACEMENT_LIMIT`` is drawn by
    placing N ~ Poisson(dose * total) electrons through the alias table (multinomial
    placement: exactly independent Poisson pixels); a brighter one pixel by pixel. Counts
    saturate at ``max_count``. ``out`` is (n, pixels) of the detector dtype. Frames are
    visited in ``order`` (a permutation grouping frames of one slot, so a thread reuses a
    table while it is in its cache); the result does not depend on it.
    """
    n, npix = out.shape
    cap = out.dtype.type(max_count)
    one = out.dtype.type(1)
    for o in prange(n):
        f = order[o]
        slot = slots[f]
        state = mix_seed(seed, np.uint64(indices[f]))
        frame = out[f]
        expected = dose * totals[slot]
        if expected <= PLACEMENT_LIMIT * npix:
            frame[:] = 0
            state, electrons = poisson(state, expected)
            table = tables[slot]
            for _ in range(electrons):
                state, u = _uniform(state)
                u *= npix
                j = int(u)
                if j >= npix:
                    j = npix - 1
                pix = j if (u - j) * 4294967296.0 < table[j, 0] else table[j, 1]
                if frame[pix] < cap:
                    frame[pix] += one
        else:
            row = intensity[slot]
            for pix in range(npix):
                state, k = poisson(state, dose * row[pix])
                frame[pix] = cap if k > max_count else k
