"""Multislice propagation of the probe through a :class:`~bluestem.twin.slices.SliceStack`.

The wave is transmitted through each slice, ``psi -> t_s psi`` with ``t_s =
exp(i sigma V_s)``, and propagated to the next one with the Fresnel propagator ``P(k) =
exp(-i pi lambda dz |k|**2)`` (Cowley & Moodie 1957; Kirkland, *Advanced Computing in
Electron Microscopy*, ch. 6). Transmission functions and propagator are band-limited to
2/3 of the Nyquist frequency (Kirkland's anti-aliasing), so the product ``t psi`` never
wraps into the kept band. The grid is the detector's reciprocal sampling on a real-space
grid 1.5 times finer (``multislice_grid``), so the band limit covers the detector's
inscribed circle; detector pixels outside the band limit (the corners) stay dark.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import get_num_threads

from bluestem.twin.grid import SimulationGrid
from bluestem.twin.multislice_kernels import (
    accumulate_intensity,
    conj_scale,
    intensity,
    mask_conj,
    start_wave,
    tables_from_cropped,
    transmission_from_potential,
    transmit_conj,
)
from bluestem.twin.probe import Optics, aberration_function
from bluestem.twin.slices import SliceStack

__all__ = ["Multislice", "band_limit", "embedded_probe", "fresnel_propagator", "multislice_grid"]

#: Probe positions propagated together by one thread (one FFT call per slice).
_BATCH = 4
#: The anti-aliasing band limit as a fraction of the Nyquist frequency.
BAND_LIMIT = 2.0 / 3.0


def multislice_grid(grid: SimulationGrid) -> SimulationGrid:
    """The multislice grid of a detector grid: same ``dk`` (one k pixel is one native
    detector pixel), ``3 * ceil(n / 2)`` pixels per axis, so that 2/3 of its Nyquist
    frequency reaches the detector's edge (``ceil(n / 2)`` pixels from k = 0)."""
    shape = tuple(3 * ((n + 1) // 2) for n in grid.shape)
    return SimulationGrid(shape, grid.wavelength, grid.sigma, grid.dk)


def band_limit(grid: SimulationGrid) -> np.ndarray:
    """The anti-aliasing aperture (bool, FFT order): ``|k| <= 2/3 k_Nyquist``, with the
    Nyquist frequency of the coarser axis (``min(shape) / 2`` pixels)."""
    iy = np.fft.fftfreq(grid.shape[0], 1.0 / grid.shape[0])[:, None]
    ix = np.fft.fftfreq(grid.shape[1], 1.0 / grid.shape[1])[None, :]
    radius = BAND_LIMIT * min(grid.shape) / 2.0
    return iy * iy + ix * ix <= radius * radius * (1.0 + 1e-12)


def fresnel_propagator(
    grid: SimulationGrid, dz: float, tilt: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Fresnel propagator over ``dz`` (m), band-limited, complex128 in FFT order.

    ``P(k) = exp(-i pi lambda dz |k|**2 - 2 pi i dz (ky tan(theta_y) + kx tan(theta_x)))``
    inside :func:`band_limit`, 0 outside. With a tilt the wave drifts by ``dz tan(theta)``
    per slice (towards +y for a positive theta_y).
    """
    ky, kx = grid.frequencies()
    ty, tx = (np.tan(t) for t in tilt)
    phase = np.pi * grid.wavelength * dz * (ky * ky + kx * kx) + 2.0 * np.pi * dz * (
        ky * ty + kx * tx
    )
    return np.where(band_limit(grid), np.exp(-1j * phase), 0.0)


def embedded_probe(optics: Optics, grid: SimulationGrid, fine: SimulationGrid) -> np.ndarray:
    """The probe of :func:`~bluestem.twin.probe.probe_wave` on ``grid`` (its very k-space
    pixels, so the thin-slice limit is exactly the phase object), on the finer grid
    ``fine`` of the same ``dk``, centred on pixel (my // 2, mx // 2), ``sum |psi|**2 = 1``.
    """
    ky, kx = grid.frequencies()
    aperture = grid.wavelength * np.hypot(ky, kx) <= optics.convergence_semi_angle
    if not aperture.any():
        raise ValueError("the probe-forming aperture covers no detector pixel")
    psi_k = aperture * np.exp(-1j * aberration_function(ky, kx, grid.wavelength, optics))
    iy = np.fft.fftfreq(grid.shape[0], 1.0 / grid.shape[0]).astype(np.int64) % fine.shape[0]
    ix = np.fft.fftfreq(grid.shape[1], 1.0 / grid.shape[1]).astype(np.int64) % fine.shape[1]
    embedded = np.zeros(fine.shape, np.complex128)
    embedded[np.ix_(iy, ix)] = psi_k
    psi = np.fft.fftshift(np.fft.ifft2(embedded))
    return psi / np.sqrt(np.sum(np.abs(psi) ** 2))


class Multislice:
    """Probes at many positions propagated through a slice stack.

    Positions are split into batches of a few probes, run on ``threads`` Python threads;
    every step releases the GIL (numpy's FFT, the numba kernels), so the threads use the
    cores. Window pixel (i, j) of the probe at (y, x) is at ``(y + (i - my // 2) dy, x +
    (j - mx // 2) dx)`` on ``grid`` (the multislice grid), the probe centred on it.

    Parameters
    ----------
    optics : Optics
        The probe (focused at the entrance surface for ``defocus = 0``).
    grid : SimulationGrid
        The detector's grid; the propagation runs on ``multislice_grid(grid)``.
    stack : SliceStack
        The specimen's slices.
    threads : int, optional
        Worker threads (default: numba's thread count).
    """

    def __init__(
        self,
        optics: Optics,
        grid: SimulationGrid,
        stack: SliceStack,
        *,
        threads: int | None = None,
    ) -> None:
        if not isinstance(stack, SliceStack):
            raise TypeError(f"stack must be a SliceStack, got {type(stack).__name__}")
        self.stack = stack
        self.detector_grid = grid
        self.grid = multislice_grid(grid)
        limit = band_limit(self.grid)
        self.probe = embedded_probe(optics, grid, self.grid)
        ky, kx = grid.frequencies()
        aperture = grid.wavelength * np.hypot(ky, kx) <= optics.convergence_semi_angle
        iy, ix = (np.rint(k / grid.dk) for k in (ky, kx))
        radius = BAND_LIMIT * min(self.grid.shape) / 2.0
        if np.any(aperture & (iy * iy + ix * ix > radius * radius * (1.0 + 1e-12))):
            raise ValueError(
                f"the probe-forming aperture ({optics.convergence_semi_angle!r} rad) reaches "
                "beyond the band limit (the detector's half width): choose a larger "
                "angular range (a shorter camera length or more pixels)"
            )
        self._probe = np.ascontiguousarray(self.probe.ravel())
        self._limit = limit.astype(np.complex128).ravel()
        self._propagator = fresnel_propagator(self.grid, stack.thickness, stack.tilt).ravel()
        self._scale = 1.0 / (self.grid.shape[0] * self.grid.shape[1])
        self._reuse = stack.reuse()
        # Rows (ky) that reach into the band limit: [0, r] and [my - r, my).
        r = int(BAND_LIMIT * min(self.grid.shape) / 2.0 + 1e-9)
        my = self.grid.shape[0]
        self._rows = (slice(0, r + 1), slice(my - r, my)) if 2 * r + 1 < my else (slice(None),)
        self.threads = max(1, int(get_num_threads() if threads is None else threads))

    # -- public -------------------------------------------------------------------------

    def diffraction(self, y, x, depths) -> np.ndarray:
        """``|psi(k)|**2`` (not normalised, FFT order) after each of ``depths`` slices.

        Returns
        -------
        ndarray of float64, shape (n, len(depths), my, mx)
        """
        y, x, depths = self._check(y, x, depths)
        out = np.empty((y.size, depths.size, *self.grid.shape))

        def sink(k, start, wave):
            b = wave.shape[0]
            intensity(wave.reshape(b, -1), out[start : start + b, k].reshape(b, -1))

        self.run(y, x, depths, sink)
        return out

    def exit_waves(self, y, x) -> np.ndarray:
        """Real-space exit waves (n, my, mx), complex128, after the last slice (its
        propagation included)."""
        y, x, _ = self._check(y, x, [self.stack.slices])
        out = np.empty((y.size, *self.grid.shape), np.complex128)

        def sink(k, start, wave):
            out[start : start + wave.shape[0]] = np.fft.ifft2(np.conj(wave))

        self.run(y, x, np.array([self.stack.slices]), sink)
        return out

    def pacbed(self, y, x, depths) -> np.ndarray:
        """Mean over positions of ``|psi(k)|**2`` (each normalised to 1) after each of
        ``depths`` slices: (len(depths), my, mx) float64, FFT order."""
        y, x, depths = self._check(y, x, depths)
        acc = np.zeros((depths.size, self.grid.shape[0] * self.grid.shape[1]))
        lock = threading.Lock()

        def sink(k, start, wave):
            with lock:
                accumulate_intensity(wave.reshape(wave.shape[0], -1), acc[k])

        self.run(y, x, depths, sink)
        return acc.reshape(depths.size, *self.grid.shape) / max(1, y.size)

    def tables(self, y, x, binning, slots, intensity_slab, tables, totals) -> None:
        """Fill frame-cache slots with the exit diffraction intensity (see
        :func:`~bluestem.twin.multislice_kernels.tables_from_cropped`)."""
        ny, nx = self.detector_grid.shape

        def sink(k, start, wave):
            b = wave.shape[0]
            tables_from_cropped(
                wave, ny, nx, binning, slots[start : start + b], intensity_slab, tables, totals
            )

        y, x, _ = self._check(y, x, [self.stack.slices])
        self.run(y, x, np.array([self.stack.slices]), sink)

    def run(self, y: np.ndarray, x: np.ndarray, depths: np.ndarray, sink) -> None:
        """Propagate; after slice ``depths[k]`` call ``sink(k, start, wave)``.

        ``wave`` (b, my, mx) holds the complex conjugate of the k-space waves (FFT order)
        of positions ``start .. start + b - 1``: use it for intensities. ``depths`` are
        increasing slice counts in 1 .. ``stack.slices``. Calls may come from several
        threads at once (never twice for one position and depth).
        """
        n = y.size
        if n == 0:
            return
        batch = max(1, min(_BATCH, -(-n // self.threads)))
        starts = range(0, n, batch)
        if self.threads == 1 or len(starts) == 1:
            for s in starts:
                self._batch(y[s : s + batch], x[s : s + batch], depths, sink, s)
            return
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            futures = [
                pool.submit(self._batch, y[s : s + batch], x[s : s + batch], depths, sink, s)
                for s in starts
            ]
            for f in futures:
                f.result()

    # -- internals ------------------------------------------------------------------------

    def _check(self, y, x, depths):
        y = np.ascontiguousarray(y, np.float64).ravel()
        x = np.ascontiguousarray(x, np.float64).ravel()
        depths = np.asarray(depths, np.int64).ravel()
        if y.shape != x.shape:
            raise ValueError(f"y and x must have one shape, got {y.shape} and {x.shape}")
        if not np.isfinite(y).all() or not np.isfinite(x).all():
            raise ValueError("positions must be finite")
        if (
            depths.size == 0
            or depths[0] < 1
            or depths[-1] > self.stack.slices
            or np.any(np.diff(depths) <= 0)
        ):
            raise ValueError(
                f"depths must be increasing slice counts in [1, {self.stack.slices}], "
                f"got {depths.tolist()}"
            )
        return y, x, depths

    def _transmission(self, f: int, y: np.ndarray, x: np.ndarray) -> np.ndarray | None:
        """Band-limited transmission (b, pixels) of field ``f``, None where it is vacuum."""
        potential = self.stack.fields[f].potential(y, x, self.grid)
        if not potential.any():
            return None
        b = y.size
        t = np.empty(potential.shape, np.complex128)
        flat = t.reshape(b, -1)
        transmission_from_potential(potential.reshape(b, -1), self.grid.sigma, flat)
        self._fft_to_k(t)
        mask_conj(flat, self._limit)
        self._fft_from_k(t)
        conj_scale(flat, self._scale)
        return flat

    def _fft_to_k(self, wave: np.ndarray) -> None:
        """In-place 2-D FFT, exact on the rows that reach into the band limit only (the
        others are zeroed by the mask that follows): 5/6 of a full FFT."""
        np.fft.fft(wave, axis=-2, out=wave)
        for rows in self._rows:
            np.fft.fft(wave[:, rows], axis=-1, out=wave[:, rows])

    def _fft_from_k(self, wave: np.ndarray) -> None:
        """In-place 2-D FFT of a wave that is zero outside the band-limit rows."""
        for rows in self._rows:
            np.fft.fft(wave[:, rows], axis=-1, out=wave[:, rows])
        np.fft.fft(wave, axis=-2, out=wave)

    def _batch(self, y, x, depths, sink, start) -> None:
        b = y.size
        wave = np.empty((b, *self.grid.shape), np.complex128)
        flat = wave.reshape(b, -1)
        record = {int(d): k for k, d in enumerate(depths)}
        last = int(depths[-1])
        sequence = self.stack.sequence
        kept: dict[int, np.ndarray | None] = {}
        none = np.empty((0, flat.shape[1]), np.complex128)
        for s in range(last):
            f = int(sequence[s])
            t = kept[f] if f in kept else self._transmission(f, y, x)
            if self._reuse[f]:
                kept[f] = t
            if s == 0:
                start_wave(flat, self._probe, none if t is None else t)
            elif t is None:
                conj_scale(flat, self._scale)
            else:
                transmit_conj(flat, t, self._scale)
            self._fft_to_k(wave)
            mask_conj(flat, self._propagator)
            if s + 1 in record:
                sink(record[s + 1], start, wave)
            if s + 1 < last:
                self._fft_from_k(wave)
