"""The public fletcher32 function (HDF5's H5_checksum_fletcher32)."""

from __future__ import annotations

import numpy as np

from bluestem.frames._fletcher import fletcher32_u8

__all__ = ["fletcher32", "split_chunk"]


def fletcher32(buffer: bytes | bytearray | memoryview | np.ndarray) -> int:
    """HDF5's fletcher32 checksum of ``buffer``.

    Parameters
    ----------
    buffer : bytes-like or numpy array
        The bytes to checksum; an array is taken as its raw (C-order) bytes.

    Returns
    -------
    int
        The 32-bit checksum; HDF5's filter stores it after the chunk as 4 little-endian
        bytes.
    """
    if isinstance(buffer, np.ndarray):
        data = np.ascontiguousarray(buffer).reshape(-1).view(np.uint8)
    else:
        data = np.frombuffer(buffer, dtype=np.uint8)
    return int(fletcher32_u8(data))


def split_chunk(raw: bytes) -> tuple[np.ndarray, int]:
    """Split a raw fletcher32-filtered chunk into its data bytes and stored checksum."""
    data = np.frombuffer(raw, dtype=np.uint8)
    return data[:-4], int.from_bytes(bytes(data[-4:]), "little")
