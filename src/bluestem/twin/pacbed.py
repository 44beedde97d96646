"""Position-averaged CBED (PACBED) libraries over thickness, for thickness fitting."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bluestem.twin.detector import DetectorModel
from bluestem.twin.grid import SimulationGrid
from bluestem.twin.multislice import BAND_LIMIT, Multislice
from bluestem.twin.probe import Optics
from bluestem.twin.specimen import Specimen

__all__ = ["PacbedLibrary", "pacbed_library"]


@dataclass(frozen=True, eq=False)
class PacbedLibrary:
    """PACBED patterns of one specimen at several thicknesses.

    Attributes
    ----------
    thicknesses : ndarray
        The thickness of each pattern in m (whole slices: the requested thickness rounded).
    requested : ndarray
        The thicknesses asked for (m).
    patterns : ndarray of float64, shape (len(thicknesses), fy, fx)
        Detector frames (binning applied, k = 0 at pixel (fy // 2, fx // 2) of the native
        grid), each normalised to a total of 1 over the detector.
    positions : ndarray, shape (n, 2)
        The probe positions (y, x) in m that were averaged (canonical positions).
    record : dict
        Everything that made the library (see :meth:`parameters`).
    """

    thicknesses: np.ndarray
    requested: np.ndarray
    patterns: np.ndarray
    positions: np.ndarray
    record: dict[str, Any]

    def parameters(self) -> dict[str, Any]:
        """The library's parameters as plain (JSON-able) values: optics, detector, angle per
        pixel, specimen, slice thickness and slices per pattern, tilt, positions."""
        return dict(self.record)

    def nearest(self, thickness: float) -> np.ndarray:
        """The pattern whose thickness is nearest to ``thickness`` (m)."""
        return self.patterns[int(np.argmin(np.abs(self.thicknesses - float(thickness))))]


def _positions(specimen: Specimen, positions) -> np.ndarray:
    if isinstance(positions, int | np.integer):
        p = int(positions)
        cell = getattr(specimen, "cell", None)
        if p < 1 or cell is None:
            raise ValueError(
                f"positions={positions!r}: an integer p >= 1 means p x p positions over the "
                f"unit cell, which needs a periodic crystal (specimen {specimen.name!r}); "
                "otherwise give an (n, 2) array of positions in m"
            )
        f = np.arange(p) / p
        fy, fx = np.meshgrid(f * cell[0], f * cell[1], indexing="ij")
        return np.stack([fy.ravel(), fx.ravel()], -1)
    pos = np.asarray(positions, np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] < 1 or not np.isfinite(pos).all():
        raise ValueError(f"positions must be an int or a finite (n, 2) array, got {positions!r}")
    return pos


def _frame(mean: np.ndarray, native: tuple[int, int], binning: int) -> np.ndarray:
    """Centred native crop of a k-space pattern (FFT order), binned, normalised to 1."""
    my, mx = mean.shape
    ny, nx = native
    centred = np.fft.fftshift(mean)
    oy, ox = my // 2 - ny // 2, mx // 2 - nx // 2
    crop = centred[oy : oy + ny, ox : ox + nx]
    binned = crop.reshape(ny // binning, binning, nx // binning, binning).sum(axis=(1, 3))
    total = binned.sum()
    return binned / total if total > 0 else binned


def pacbed_library(
    optics: Optics,
    detector: DetectorModel,
    specimen: Specimen,
    thicknesses,
    *,
    positions=8,
    threads: int | None = None,
) -> PacbedLibrary:
    """PACBED patterns at several thicknesses from one multislice pass.

    Every probe position is propagated once, to the largest thickness; the diffraction
    intensity is recorded at each requested depth on the way (nothing is propagated
    twice). Each position's pattern is normalised to 1 before averaging, as the twin's
    frames are, so a pattern equals the mean of ``Twin.expected`` frames of the same
    specimen (``multislice=True``) at that thickness, normalised over the detector.

    Parameters
    ----------
    optics : Optics
        Probe-forming optics (high tension, convergence angle, aberrations).
    detector : DetectorModel
        Detector geometry (pixels, camera length, binning).
    specimen : Specimen
        A specimen with a multislice representation (``slice_stack``), e.g. ``srtio3``;
        its own ``multislice`` flag and thickness are not used.
    thicknesses : sequence of float
        Thicknesses in m, each rounded to whole slices (at least one).
    positions : int or array (n, 2)
        ``p``: p x p positions evenly over the unit cell (``specimen.cell``); or the probe
        positions (y, x) in m. Positions are reduced to the specimen's canonical ones.
    threads : int, optional
        Worker threads (default: numba's thread count).

    Returns
    -------
    PacbedLibrary
    """
    requested = np.asarray(thicknesses, np.float64).ravel()
    if requested.size == 0 or not np.all(np.isfinite(requested) & (requested > 0)):
        raise ValueError(f"thicknesses must be positive lengths in m, got {thicknesses!r}")
    dz = specimen.slice_stack(float(requested.max())).thickness
    slices = np.maximum(1, np.rint(requested / dz)).astype(np.int64)
    depths = np.unique(slices)
    stack = specimen.slice_stack(float(depths[-1] * dz))
    grid = SimulationGrid.from_setup(optics.high_tension, detector)
    pos = _positions(specimen, positions)
    _, cy, cx = specimen.canonical(pos[:, 0], pos[:, 1], grid)
    engine = Multislice(optics, grid, stack, threads=threads)
    means = engine.pacbed(cy, cx, depths)
    frames = {
        int(d): _frame(m, detector.shape, detector.binning)
        for d, m in zip(depths, means, strict=True)
    }
    patterns = np.stack([frames[int(n)] for n in slices])
    canonical = np.stack([cy, cx], -1)
    record = {
        "optics": asdict(optics),
        "detector": {
            "shape": list(detector.shape),
            "pixel_size": detector.pixel_size,
            "camera_length": detector.camera_length,
            "binning": detector.binning,
        },
        "angle_per_pixel": detector.angle_per_pixel,
        "specimen": {
            k: list(v) if isinstance(v, tuple) else v for k, v in specimen.parameters().items()
        },
        "slice_thickness": stack.thickness,
        "tilt": list(stack.tilt),
        "thicknesses": (slices * stack.thickness).tolist(),
        "requested_thicknesses": requested.tolist(),
        "slices": slices.tolist(),
        "positions": canonical.tolist(),
        "grid_shape": list(engine.grid.shape),
        "band_limit": BAND_LIMIT,
    }
    return PacbedLibrary(
        thicknesses=slices * stack.thickness,
        requested=requested,
        patterns=patterns,
        positions=canonical,
        record=record,
    )
