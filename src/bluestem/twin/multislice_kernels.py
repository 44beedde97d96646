"""numba kernels of the multislice: transmission, propagation, intensities, tables.

Waves are batches flattened to (n, pixels) complex128. The inverse FFT is done as a
forward FFT of the complex conjugate, ``ifft(K) = conj(fft(conj(K))) / pixels``: the
conjugations and the scale are folded into the passes below, so a slice costs two forward
FFTs (numpy, which releases the GIL) and two passes over the wave. None of these kernels
is parallel: the multislice runs them from several Python threads at once.
"""

from __future__ import annotations

import math

from numba import njit

from bluestem.twin.kernels import build_alias

__all__ = [
    "accumulate_intensity",
    "conj_scale",
    "intensity",
    "mask_conj",
    "start_wave",
    "tables_from_cropped",
    "transmission_from_potential",
    "transmit_conj",
]


@njit(nogil=True, cache=True)
def transmission_from_potential(potential, sigma, out):
    """``out = exp(i sigma V)`` for projected potentials ``V`` (n, pixels) in V m."""
    n, p = potential.shape
    for w in range(n):
        for i in range(p):
            phi = sigma * potential[w, i]
            out[w, i] = complex(math.cos(phi), math.sin(phi))


@njit(nogil=True, cache=True)
def start_wave(wave, probe, t):
    """``wave[w] = probe * t[w]`` (or the probe alone when ``t`` has no rows)."""
    n, p = wave.shape
    for w in range(n):
        if t.shape[0] == 0:
            for i in range(p):
                wave[w, i] = probe[i]
        else:
            for i in range(p):
                wave[w, i] = probe[i] * t[w, i]


@njit(nogil=True, cache=True)
def mask_conj(wave, factor):
    """``wave[w] = conj(wave[w] * factor)`` in place: the propagator (band limit
    included) ahead of the conjugate FFT that inverts it."""
    n, p = wave.shape
    for w in range(n):
        for i in range(p):
            v = wave[w, i] * factor[i]
            wave[w, i] = complex(v.real, -v.imag)


@njit(nogil=True, cache=True)
def transmit_conj(wave, t, scale):
    """``wave[w] = conj(wave[w]) * scale * t[w]`` in place: finishes the inverse FFT and
    transmits through the next slice."""
    n, p = wave.shape
    for w in range(n):
        for i in range(p):
            v = wave[w, i]
            wave[w, i] = complex(v.real * scale, -v.imag * scale) * t[w, i]


@njit(nogil=True, cache=True)
def conj_scale(wave, scale):
    """``wave = conj(wave) * scale`` in place: finishes an inverse FFT (vacuum slice)."""
    n, p = wave.shape
    for w in range(n):
        for i in range(p):
            v = wave[w, i]
            wave[w, i] = complex(v.real * scale, -v.imag * scale)


@njit(nogil=True, cache=True)
def intensity(wave, out):
    """``out[w] = |wave[w]|**2``."""
    n, p = wave.shape
    for w in range(n):
        for i in range(p):
            v = wave[w, i]
            out[w, i] = v.real * v.real + v.imag * v.imag


@njit(nogil=True, cache=True)
def accumulate_intensity(wave, acc):
    """``acc += sum_w |wave[w]|**2 / sum |wave[w]|**2``: each wave normalised to 1."""
    n, p = wave.shape
    for w in range(n):
        total = 0.0
        for i in range(p):
            v = wave[w, i]
            total += v.real * v.real + v.imag * v.imag
        scale = 1.0 / total if total > 0 else 0.0
        for i in range(p):
            v = wave[w, i]
            acc[i] += (v.real * v.real + v.imag * v.imag) * scale


@njit(nogil=True, cache=True)
def tables_from_cropped(waves, ny, nx, binning, slots, intensity, tables, totals):
    """Centred ``ny x nx`` crop of k-space waves on a larger grid, binned, with tables.

    ``waves`` (n, my, mx) in FFT order; k = 0 goes to native pixel (ny // 2, nx // 2).
    Slot ``slots[w]`` of ``intensity`` (capacity, fy * fx) gets the binned crop of
    ``|wave|**2`` normalised by the total over the whole grid, ``tables`` its alias
    table and ``totals[slot]`` the sum over the delivered pixels.
    """
    n, my, mx = waves.shape
    fy = ny // binning
    fx = nx // binning
    oy = my // 2 - ny // 2
    ox = mx // 2 - nx // 2
    for w in range(n):
        slot = slots[w]
        grand = 0.0
        for i in range(my):
            for j in range(mx):
                v = waves[w, i, j]
                grand += v.real * v.real + v.imag * v.imag
        scale = 1.0 / grand if grand > 0 else 0.0
        row = intensity[slot]
        for q in range(fy * fx):
            row[q] = 0.0
        for i in range(my):
            r = (i + my // 2) % my - oy
            if r < 0 or r >= ny:
                continue
            bi = r // binning
            for j in range(mx):
                c = (j + mx // 2) % mx - ox
                if c < 0 or c >= nx:
                    continue
                v = waves[w, i, j]
                row[bi * fx + c // binning] += (v.real * v.real + v.imag * v.imag) * scale
        totals[slot] = build_alias(row, tables[slot])
