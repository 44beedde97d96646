"""The physics twin: probe, specimen and counting detector rendering blocks of frames."""

from __future__ import annotations

import copy
import math

import numpy as np

from bluestem.twin.cache import BYTES_PER_PIXEL, FrameCache
from bluestem.twin.detector import DetectorModel
from bluestem.twin.faults import FaultSchedule
from bluestem.twin.grid import SimulationGrid
from bluestem.twin.kernels import tables_from_waves
from bluestem.twin.multislice import Multislice
from bluestem.twin.noise import render_frames
from bluestem.twin.probe import Optics, probe_wave
from bluestem.twin.scan import ScanGeometry
from bluestem.twin.specimen import Specimen

__all__ = ["Twin"]

#: Exit waves computed per FFT batch (bounds the temporary memory).
_WAVE_BATCH = 32


class Twin:
    """A simulated 4D-STEM acquisition: the frame at every scan position.

    A frame at probe position r is ``dose * |FFT(psi(x - r) t(x))|**2`` over the window
    of the detector's grid (see ``SimulationGrid``), normalised to a total of 1, summed
    over the binning, then Poisson counted and clipped at the counter depth. Noiseless
    frames are cached by the specimen's key (``Specimen.canonical``), so the fast path is
    exact by construction. A specimen with ``multislice=True`` is instead propagated
    through its slices (:class:`~bluestem.twin.multislice.Multislice`); its frames are
    cached and rendered the same way.

    Parameters
    ----------
    optics : Optics
    detector : DetectorModel
    scan : ScanGeometry
    specimen : Specimen
    dose_per_frame : float
        Mean electrons per frame (>= 0).
    seed : int
        Seed of the counting noise; frame i depends only on (seed, i).
    faults : FaultSchedule, optional
        Carried for the IOC (which drops or delays frames); rendering ignores it.
    cache_bytes : int
        Bound on the memory of the frame cache (default 1 GiB: all 1024 SrTiO3 frames of
        256² fit; 16 bytes per pixel per cached frame).

    Notes
    -----
    ``render`` and ``render_at`` release the GIL in their kernels and may be called from
    several threads at once. In multislice mode a missing frame costs two FFTs per slice
    (spread over numba's thread count of worker threads); call ``warm_up`` first.
    """

    def __init__(
        self,
        optics: Optics,
        detector: DetectorModel,
        scan: ScanGeometry,
        specimen: Specimen,
        *,
        dose_per_frame: float,
        seed: int = 0,
        faults: FaultSchedule | None = None,
        cache_bytes: int = 2**30,
    ) -> None:
        for name, value, kind in (
            ("optics", optics, Optics),
            ("detector", detector, DetectorModel),
            ("specimen", specimen, Specimen),
        ):
            if not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
        self.optics = optics
        self.detector = detector
        self.specimen = specimen
        self._set_acquisition(scan, dose_per_frame, seed, faults)
        self.frame_shape = detector.frame_shape
        self.dtype = detector.dtype
        self.grid = SimulationGrid.from_setup(optics.high_tension, detector)
        self._probe = probe_wave(optics, self.grid)
        self._multislice = (
            Multislice(optics, self.grid, specimen.slice_stack()) if specimen.multislice else None
        )
        pixels = self.frame_shape[0] * self.frame_shape[1]
        capacity = max(16, int(cache_bytes) // (pixels * BYTES_PER_PIXEL))
        self._cache = FrameCache(pixels, capacity)
        self._chunk = max(1, capacity // 4)

    def _set_acquisition(self, scan, dose_per_frame, seed, faults) -> None:
        if not isinstance(scan, ScanGeometry):
            raise TypeError(f"scan must be a ScanGeometry, got {type(scan).__name__}")
        dose = float(dose_per_frame)
        if not (math.isfinite(dose) and 0 <= dose <= 1e12):
            raise ValueError(
                f"dose_per_frame must be in [0, 1e12] electrons, got {dose_per_frame!r}"
            )
        if not isinstance(seed, int | np.integer):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if faults is not None and not isinstance(faults, FaultSchedule):
            raise TypeError(f"faults must be a FaultSchedule or None, got {type(faults).__name__}")
        self.scan = scan
        self.dose_per_frame = dose
        self.seed = int(seed)
        self.faults = faults if faults is not None else FaultSchedule()
        self._positions = scan.positions().reshape(-1, 2)
        self._seed64 = np.uint64(self.seed % 2**64)

    def for_acquisition(
        self,
        scan: ScanGeometry,
        *,
        dose_per_frame: float,
        seed: int = 0,
        faults: FaultSchedule | None = None,
    ) -> Twin:
        """The same instrument and specimen for another acquisition.

        The new twin shares this one's probe and frame cache: the noiseless frames depend
        only on the optics, the detector and the specimen, so frames computed for an
        earlier scan are exact for this one too (the cache is keyed by canonical
        position). Scan, dose, seed and faults are the new acquisition's.
        """
        twin = copy.copy(self)
        twin._set_acquisition(scan, dose_per_frame, seed, faults)
        return twin

    @property
    def cache_info(self) -> dict[str, int]:
        """Cache capacity, entries, hits and misses (distinct keys per block)."""
        c = self._cache
        return {"capacity": c.capacity, "entries": len(c), "hits": c.hits, "misses": c.misses}

    def render(self, first: int, count: int) -> np.ndarray:
        """Frames for flat scan indices ``first .. first + count - 1`` (row-major).

        Returns
        -------
        ndarray, shape (count, fy, fx), dtype ``self.dtype``
        """
        first, count = int(first), int(count)
        size = self.scan.size
        if first < 0 or count < 0 or first + count > size:
            raise ValueError(
                f"frames {first}..{first + count - 1} are outside the scan: allowed "
                f"0 <= first, 0 <= count, first + count <= {size}"
            )
        indices = np.arange(first, first + count, dtype=np.int64)
        return self._render(self._positions[first : first + count], indices)

    def render_at(self, positions: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Frames at arbitrary positions (n, 2) in m (y, x), noise seeded by ``indices``."""
        positions = np.asarray(positions, np.float64)
        indices = np.asarray(indices)
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise ValueError(f"positions must have shape (n, 2), got {positions.shape}")
        if indices.shape != (positions.shape[0],) or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"indices must be {positions.shape[0]} integers, got {indices!r}")
        if indices.size and indices.min() < 0:
            raise ValueError(f"indices must be >= 0, got minimum {indices.min()}")
        if not np.isfinite(positions).all():
            raise ValueError("positions must be finite")
        return self._render(positions, indices.astype(np.int64))

    def expected(self, position) -> np.ndarray:
        """Noiseless mean counts (fy, fx), float64, at a position (y, x) in m (no
        saturation); sums to ``dose_per_frame`` up to what falls off the detector."""
        y, x = (float(v) for v in position)
        keys, cy, cx = self.specimen.canonical(np.array([y]), np.array([x]), self.grid)
        slots, missing = self._cache.acquire(keys)
        try:
            if missing[0]:
                self._compute(cy, cx, slots)
                self._cache.publish(keys, slots)
            frame = self._cache.intensity[slots[0]] * self.dose_per_frame
        finally:
            self._cache.release(slots)
        return frame.reshape(self.frame_shape)

    def warm_up(self) -> int:
        """Compile the kernels and fill the cache for the scan (as far as it holds).

        Returns the number of noiseless frames computed.
        """
        computed = 0
        pos = self._positions
        for start in range(0, len(pos), self._chunk):
            _, _, _, computed_now = self._prepare(pos[start : start + self._chunk])
            computed += computed_now
            if len(self._cache) >= self._cache.capacity:
                break
        self.render(0, min(1, self.scan.size))
        return computed

    def _prepare(self, pos: np.ndarray):
        """Keys, slots (pinned, then released) and inverse map for a chunk of positions."""
        keys, cy, cx = self.specimen.canonical(pos[:, 0], pos[:, 1], self.grid)
        ukeys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        slots, missing = self._cache.acquire(ukeys)
        try:
            if missing.any():
                self._compute(cy[first[missing]], cx[first[missing]], slots[missing])
                self._cache.publish(ukeys[missing], slots[missing])
        finally:
            self._cache.release(slots)
        return ukeys, slots, inverse, int(missing.sum())

    def _render(self, positions: np.ndarray, indices: np.ndarray) -> np.ndarray:
        n = len(indices)
        fy, fx = self.frame_shape
        out = np.empty((n, fy, fx), self.dtype)
        flat = out.reshape(n, fy * fx)
        cache = self._cache
        for start in range(0, n, self._chunk):
            stop = min(n, start + self._chunk)
            pos = positions[start:stop]
            keys, cy, cx = self.specimen.canonical(pos[:, 0], pos[:, 1], self.grid)
            ukeys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            slots, missing = cache.acquire(ukeys)
            try:
                if missing.any():
                    self._compute(cy[first[missing]], cx[first[missing]], slots[missing])
                    cache.publish(ukeys[missing], slots[missing])
                frame_slots = slots[inverse.ravel()]
                render_frames(
                    cache.intensity, cache.tables, cache.totals, frame_slots,
                    np.argsort(frame_slots, kind="stable"), indices[start:stop], self._seed64,
                    self.dose_per_frame, self.detector.max_count, flat[start:stop],
                )  # fmt: skip
            finally:
                cache.release(slots)
        return out

    def _compute(self, cy: np.ndarray, cx: np.ndarray, slots: np.ndarray) -> None:
        """Fill cache slots with the noiseless frames at canonical positions."""
        cache = self._cache
        if self._multislice is not None:
            self._multislice.tables(
                cy, cx, self.detector.binning, np.ascontiguousarray(slots),
                cache.intensity, cache.tables, cache.totals,
            )  # fmt: skip
            return
        for start in range(0, len(slots), _WAVE_BATCH):
            part = slice(start, start + _WAVE_BATCH)
            waves = self.specimen.transmission(cy[part], cx[part], self.grid)
            waves *= self._probe
            waves = np.fft.fft2(waves)
            tables_from_waves(
                waves, self.detector.binning, np.ascontiguousarray(slots[part]),
                cache.intensity, cache.tables, cache.totals,
            )  # fmt: skip
