"""Frames from a 4D file, read a block at a time: what ``bluestem ioc replay`` and
``bluestem merlin-sim --frames-from FILE`` send.

A file is bluestem's own (its ``frames_path`` attribute names the frames) or any HDF5 /
EMD file: its largest dataset of 3 or 4 dimensions (frames last). Frames are served in
storage order, going round the file, centred on the detector (cropped or zero-padded)
and clipped to a counter's range (:func:`fit_frames`).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np

__all__ = ["CACHE_BYTES", "FileFrames", "fit_frames"]

#: Files whose frames (as uint32 on the detector) fit in this are held in memory.
CACHE_BYTES = 512 * 1024**2


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


class FileFrames:
    """Frames from a 4D file (see the module), read as they are asked for.

    Parameters
    ----------
    path : path
        The file.
    shape : (ky, kx), optional
        The detector's frame; default the file's own.
    option : str
        The command-line option that named the file, for error messages.
    """

    def __init__(self, path, shape=None, *, option: str = "--frames-from"):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{option} {str(path)!r}: no such file; allowed: a 4D HDF5 / "
                             "EMD file")  # fmt: skip
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise ValueError(f"{option} {str(path)!r}: not an HDF5 file ({exc}); allowed: a "
                             "4D HDF5 / EMD file") from None  # fmt: skip
        self._data = self._find(self._file)
        if self._data is None:
            self._file.close()
            raise ValueError(f"{option} {str(path)!r}: no dataset of 3 or 4 dimensions "
                             "(frames) in it; allowed: a 4D HDF5 / EMD file")  # fmt: skip
        self.dataset = self._data.name
        self.frame_shape = tuple(int(v) for v in self._data.shape[-2:])
        self.scan_shape = tuple(int(v) for v in self._data.shape[:-2])
        self.dtype = self._data.dtype
        self.shape = tuple(shape) if shape is not None else self.frame_shape
        self._lock = threading.Lock()
        # A file that fits is read once and served from memory (a detector sends at its
        # own rate: h5py reads and refits of small blocks would not keep up).
        self._fits = self.positions * math.prod(self.shape) * 4 <= CACHE_BYTES
        self._cache: dict[int, np.ndarray] = {}

    @staticmethod
    def _find(group):
        import h5py

        found = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.ndim in (3, 4) and obj.dtype.kind in "uif":
                found.append(obj)

        group.visititems(visit)
        own = group.attrs.get("frames_path")  # bluestem's own file names its frames
        if isinstance(own, str) and own in group:
            return group[own]
        found.sort(key=lambda d: -d.size)
        return found[0] if found else None

    @property
    def positions(self) -> int:
        return int(math.prod(self._data.shape[:-2]))

    def frames(self, first: int, count: int, depth: int = 24) -> np.ndarray:
        """Frames ``first .. first + count - 1`` (going round the file), clipped to a
        counter of ``depth`` bits, as that counter's type (uint8, uint16, uint32)."""
        dtype = np.uint8 if depth <= 8 else np.uint16 if depth <= 16 else np.uint32
        index = np.arange(first, first + count) % self.positions
        cached = self._cached(depth)
        if cached is not None:  # the whole file in memory, fitted once per depth
            return cached[index]
        out = np.empty((count, *self.shape), dtype)
        with self._lock:  # a slab of whole rows at a time: h5py reads those fastest
            done = 0
            while done < count:
                start = int(index[done])
                take = min(count - done, self.positions - start)
                out[done : done + take] = fit_frames(self._read(start, take), self.shape,
                                                     depth)  # fmt: skip
                done += take
        return out

    def _read(self, start: int, count: int) -> np.ndarray:
        data = self._data
        if data.ndim == 3:
            return np.asarray(data[start : start + count])
        nx = data.shape[1]
        y0, y1 = start // nx, (start + count - 1) // nx + 1
        slab = np.asarray(data[y0:y1]).reshape(-1, *self.frame_shape)
        return slab[start - y0 * nx : start - y0 * nx + count]

    def _cached(self, depth: int) -> np.ndarray | None:
        """The whole file fitted to the detector and a ``depth``-bit counter (its type),
        when it is at most CACHE_BYTES."""
        if depth not in self._cache and self._fits:
            with self._lock:
                if depth not in self._cache:
                    dtype = np.uint8 if depth <= 8 else np.uint16 if depth <= 16 else np.uint32
                    fitted = fit_frames(self._read(0, self.positions), self.shape, depth)
                    self._cache = {depth: fitted.astype(dtype)}  # one depth at a time
        return self._cache.get(depth)

    def close(self) -> None:
        self._file.close()
