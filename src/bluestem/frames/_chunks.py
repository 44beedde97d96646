"""Chunk geometry: which chunk holds a frame, and the staging buffers for chunks."""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_CHUNK_BYTES", "ChunkGrid"]

# About 1 MiB per chunk: see docs/data-layout.md for the measurement behind it.
DEFAULT_CHUNK_BYTES = 1 << 20


class ChunkGrid:
    """Chunks of ``chunk_frames`` consecutive frames of one scan row.

    A series ``(n,)`` is treated as a single row of ``n`` frames. Chunk keys are
    ``(row, block)``; a chunk at the end of a row may hold fewer than ``chunk_frames``
    valid frames (HDF5 still stores it full size).
    """

    def __init__(self, scan_shape, frame_shape, dtype, chunk_frames=None) -> None:
        self.scan_shape = tuple(scan_shape)
        self.frame_shape = tuple(frame_shape)
        self.dtype = np.dtype(dtype)
        self.series = len(self.scan_shape) == 1
        self.nrows = 1 if self.series else self.scan_shape[0]
        self.row_len = self.scan_shape[-1]
        self.total = self.nrows * self.row_len
        frame_nbytes = int(np.prod(self.frame_shape)) * self.dtype.itemsize
        if chunk_frames is None:
            chunk_frames = max(1, DEFAULT_CHUNK_BYTES // frame_nbytes)
        chunk_frames = int(chunk_frames)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames={chunk_frames} must be >= 1")
        self.chunk_frames = min(chunk_frames, self.row_len)
        lead = (self.chunk_frames,) if self.series else (1, self.chunk_frames)
        self.chunk_shape = (*lead, *self.frame_shape)
        self.chunk_nbytes = self.chunk_frames * frame_nbytes
        # How far behind the newest frame an incomplete chunk may fall before it is
        # written with gaps: two scan rows, or eight chunks of a series.
        self.stale_frames = 8 * self.chunk_frames if self.series else 2 * self.row_len

    def locate(self, index: int, remaining: int) -> tuple[tuple[int, int], int, int]:
        """Chunk key of frame ``index``, its position in the chunk, and how many of the
        next ``remaining`` frames fall in the same chunk."""
        row, col = divmod(index, self.row_len)
        block, pos = divmod(col, self.chunk_frames)
        count = min(remaining, self.chunk_frames - pos, self.row_len - col)
        return (row, block), pos, count

    def valid(self, key: tuple[int, int]) -> int:
        """Frames of chunk ``key`` that lie inside the dataset."""
        start = key[1] * self.chunk_frames
        return min(self.chunk_frames, self.row_len - start)

    def offset(self, key: tuple[int, int]) -> tuple[int, ...]:
        """Logical offset of chunk ``key`` in the dataset (for direct chunk I/O)."""
        start = key[1] * self.chunk_frames
        lead = (start,) if self.series else (key[0], start)
        return (*lead, 0, 0)

    def selection(self, key: tuple[int, int]) -> tuple:
        """Dataset selection of the valid frames of chunk ``key``."""
        start = key[1] * self.chunk_frames
        cols = slice(start, start + self.valid(key))
        return (cols,) if self.series else (key[0], cols)

    def received_selection(self, key: tuple[int, int]) -> tuple:
        """Selection of chunk ``key`` in the received map."""
        return self.selection(key)

    def frames_of(self, key: tuple[int, int]) -> range:
        """Flat frame indices held by chunk ``key``."""
        first = key[0] * self.row_len + key[1] * self.chunk_frames
        return range(first, first + self.valid(key))

    def key_of_offset(self, offset: tuple[int, ...]) -> tuple[int, int]:
        """Chunk key from a chunk's logical offset."""
        if self.series:
            return (0, offset[0] // self.chunk_frames)
        return (offset[0], offset[1] // self.chunk_frames)

    def new_buffer(self) -> tuple[np.ndarray, np.ndarray]:
        """A zeroed chunk buffer (data + 4 checksum bytes) and its per-frame fill mask."""
        return np.zeros(self.chunk_nbytes + 4, dtype=np.uint8), np.zeros(
            self.chunk_frames, dtype=bool
        )

    def view(self, buf: np.ndarray) -> np.ndarray:
        """The frames of a chunk buffer as (chunk_frames, ky, kx)."""
        return (
            buf[: self.chunk_nbytes].view(self.dtype).reshape(self.chunk_frames, *self.frame_shape)
        )
