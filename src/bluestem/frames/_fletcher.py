"""HDF5's fletcher32 checksum as a numba kernel.

A byte-for-byte port of ``H5_checksum_fletcher32`` (H5checksum.c): the buffer is read
as big-endian 16-bit words, summed in blocks of 360 words (the largest block for which
the second sum cannot overflow 32 bits), with an odd trailing byte treated as the high
byte of a last word. HDF5's fletcher32 filter appends the result to the chunk as four
little-endian bytes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["fletcher32_u8"]


@njit(nogil=True, cache=True)
def fletcher32_u8(data: np.ndarray) -> int:  # pragma: no cover - compiled
    """Fletcher32 of a 1-D uint8 array exactly as HDF5 computes it."""
    n = data.size
    words = n // 2
    sum1 = np.uint64(0)
    sum2 = np.uint64(0)
    mask = np.uint64(0xFFFF)
    sixteen = np.uint64(16)
    i = 0
    while words > 0:
        block = 360 if words > 360 else words
        words -= block
        for _ in range(block):
            sum1 += (np.uint64(data[i]) << np.uint64(8)) | np.uint64(data[i + 1])
            sum2 += sum1
            i += 2
        sum1 = (sum1 & mask) + (sum1 >> sixteen)
        sum2 = (sum2 & mask) + (sum2 >> sixteen)
    if n % 2:
        sum1 += np.uint64(data[i]) << np.uint64(8)
        sum2 += sum1
        sum1 = (sum1 & mask) + (sum1 >> sixteen)
        sum2 = (sum2 & mask) + (sum2 >> sixteen)
    sum1 = (sum1 & mask) + (sum1 >> sixteen)
    sum2 = (sum2 & mask) + (sum2 >> sixteen)
    return (sum2 << sixteen) | sum1
