"""What the Merlin simulator's frames show: the physics twin, or frames from a 4D file.

A provider gives assembled frames ``(count, ky, kx)`` for frame indices ``first ..``
(0-based, the detector's frame number minus one) at the detector's shape. The simulator
has no scan generator: frame *i* shows scan position ``i mod positions`` of the
provider's own raster, so an acquisition longer than the raster goes round it again.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np

__all__ = ["FileFrames", "TwinFrames", "fit_frames", "provider_for"]


def fit_frames(frames: np.ndarray, shape: tuple[int, int], depth: int = 24) -> np.ndarray:
    """``frames`` centred on a detector of ``shape`` (cropped or zero-padded) and clipped
    to the counter's range ``0 .. 2**depth - 1``, as uint32 (a counter saturates)."""
    n, fy, fx = frames.shape
    ky, kx = shape
    out = np.zeros((n, ky, kx), np.uint32)
    # Offsets of the overlap in the source (s) and the detector (d), per axis.
    sy, dy = max(0, (fy - ky) // 2), max(0, (ky - fy) // 2)
    sx, dx = max(0, (fx - kx) // 2), max(0, (kx - fx) // 2)
    h, w = min(fy, ky), min(fx, kx)
    part = np.asarray(frames[:, sy : sy + h, sx : sx + w])
    if part.dtype.kind == "f":
        part = np.nan_to_num(part, nan=0.0, posinf=0.0, neginf=0.0)
    out[:, dy : dy + h, dx : dx + w] = np.clip(part, 0, 2**depth - 1)
    return out


class TwinFrames:
    """Frames of the physics twin scanning a raster of ``scan`` positions.

    The raster's noisy frames are rendered once, when first asked for (the twin's frame
    cache makes the noiseless part fast), and then served from memory: a detector sends
    at its own rate, and rendering 256² frames as they go would not keep up.

    Parameters
    ----------
    shape : (ky, kx)
        The detector's assembled frame (256² or 512²).
    specimen : str
        A name of :data:`bluestem.twin.SPECIMENS`.
    scan : (ny, nx)
        Positions of the raster, at ``step`` (m).
    dose : float
        Electrons per frame.
    seed : int
        Noise seed.
    """

    def __init__(self, shape, *, specimen="srtio3", scan=(16, 16), step=0.2e-10,
                 dose=2000.0, seed=0, camera_length=0.1):  # fmt: skip
        self.shape = tuple(shape)
        self.specimen, self.scan, self.step = specimen, tuple(scan), float(step)
        self.dose, self.seed, self.camera_length = float(dose), int(seed), camera_length
        self._frames: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def positions(self) -> int:
        return int(math.prod(self.scan))

    def _rendered(self) -> np.ndarray:
        with self._lock:
            if self._frames is None:
                from bluestem import twin as tw

                twin = tw.Twin(
                    tw.Optics(),
                    tw.DetectorModel(
                        shape=self.shape, camera_length=self.camera_length, counter_depth=24
                    ),
                    tw.ScanGeometry(shape=self.scan, step=(self.step, self.step)),
                    tw.make_specimen(self.specimen),
                    dose_per_frame=self.dose,
                    seed=self.seed,
                )
                self._frames = fit_frames(twin.render(0, self.positions), self.shape)
            return self._frames

    def frames(self, first: int, count: int, depth: int = 24) -> np.ndarray:
        """Frames ``first .. first + count - 1`` (uint32, going round the raster), clipped
        to a counter of ``depth`` bits."""
        cached = self._rendered()
        index = np.arange(first, first + count) % len(cached)
        return np.minimum(cached[index], np.uint32(2**depth - 1))


class FileFrames:
    """Frames from a 4D file: bluestem's own (its ``received`` frames), or the first
    dataset of 3 or 4 dimensions in any HDF5 / EMD file, in storage order.

    Frames are read as they are asked for, a block at a time, centred on the detector
    and clipped to its counter (:func:`fit_frames`).
    """

    def __init__(self, path, shape):
        import h5py

        self.path, self.shape = Path(path), tuple(shape)
        if not self.path.is_file():
            raise ValueError(f"--frames-from {str(path)!r}: no such file; allowed: 'twin' "
                             "or a 4D HDF5 / EMD file")  # fmt: skip
        self._file = h5py.File(self.path, "r")
        self._data = self._find(self._file)
        if self._data is None:
            self._file.close()
            raise ValueError(f"--frames-from {str(path)!r}: no dataset of 3 or 4 dimensions "
                             "(frames) in it; allowed: a 4D HDF5 / EMD file")  # fmt: skip
        self._lock = threading.Lock()

    @staticmethod
    def _find(group):
        import h5py

        found = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.ndim in (3, 4) and obj.dtype.kind in "uif":
                found.append(obj)

        group.visititems(visit)
        # bluestem's own frames first (EMD: /version_1/data/datacubes/...), then the largest.
        found.sort(key=lambda d: ("datacube" not in d.name, -d.size))
        return found[0] if found else None

    @property
    def positions(self) -> int:
        return int(math.prod(self._data.shape[:-2]))

    def frames(self, first: int, count: int, depth: int = 24) -> np.ndarray:
        """Frames ``first .. first + count - 1`` (uint32, going round the file), clipped
        to a counter of ``depth`` bits."""
        total, data = self.positions, self._data
        flat = data.shape[-2:]
        out = []
        index = first % total
        with self._lock:
            while count > 0:
                take = min(count, total - index)
                where = np.unravel_index(np.arange(index, index + take), data.shape[:-2])
                if data.ndim == 3:
                    block = data[index : index + take]
                else:  # whole rows at once: h5py reads a slab faster than fancy indices
                    rows = range(int(where[0][0]), int(where[0][-1]) + 1)
                    slab = data[rows.start : rows.stop].reshape(-1, *flat)
                    start = index - rows.start * data.shape[1]
                    block = slab[start : start + take]
                out.append(fit_frames(np.asarray(block), self.shape, depth))
                count -= take
                index = 0
        return np.concatenate(out)

    def close(self) -> None:
        self._file.close()


def provider_for(source: str, shape, **twin_options):
    """``"twin"`` → :class:`TwinFrames`, anything else is a file → :class:`FileFrames`."""
    if source == "twin":
        return TwinFrames(shape, **twin_options)
    return FileFrames(source, shape)
