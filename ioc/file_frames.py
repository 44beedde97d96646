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

__all__ = ["FileFrames", "fit_frames"]


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
