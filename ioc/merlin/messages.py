"""Check and index a block of Merlin frame messages (docs/merlin.md, "Framing").

One numba kernel walks a buffer of consecutive frame messages of one size: each must
start ``MPX,`` with the length the size implies, its body ``MQ1,``, and it gives up its
frame number (header field 1). The client then decodes the pixels of the whole block
(:func:`bluestem.ioc.merlin.pixels.decode_block`) at the offsets this implies.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .pixels import _as_buffer

__all__ = ["scan_block"]

_REASONS = {
    1: "no 'MPX,' prefix",
    3: "no ',' after the length",
    4: "no 'MQ1,' header",
    5: "bad frame number",
}


@njit(nogil=True, cache=True)
def _scan(buf, n, message_bytes, header_bytes, numbers):
    """Check n messages, filling numbers; return (first bad index or -1, reason code)."""
    for i in range(n):
        m = buf[i * message_bytes : (i + 1) * message_bytes]
        if m[0] != 77 or m[1] != 80 or m[2] != 88 or m[3] != 44:  # MPX,
            return i, 1
        length = 0
        for d in range(4, 14):
            if m[d] < 48 or m[d] > 57:
                return i, 2
            length = length * 10 + (m[d] - 48)
        if length != message_bytes - 14:
            return i, 2
        if m[14] != 44:
            return i, 3
        if m[15] != 77 or m[16] != 81 or m[17] != 49 or m[18] != 44:  # MQ1,
            return i, 4
        # At most 18 digits (indices 19 … 36), so the int64 cannot overflow.
        stop = min(15 + header_bytes, 38)
        j = 19
        number = 0
        while j < stop and 48 <= m[j] <= 57:
            number = number * 10 + (m[j] - 48)
            j += 1
        if j == 19 or j == stop or m[j] != 44:
            return i, 5
        numbers[i] = number
    return -1, 0


def scan_block(
    buf, n_frames: int, message_bytes: int, header_bytes: int
) -> tuple[np.ndarray, int, str]:
    """Check and index a buffer of consecutive frame messages, each `message_bytes` long.

    A message is ``MPX,`` + ten digits + ``,`` + an MQ1 header of `header_bytes` + the
    pixel data; message i starts at ``i * message_bytes``, its pixel data at
    ``15 + header_bytes + i * message_bytes``.

    Returns
    -------
    frame_numbers : numpy.ndarray
        int64 (n_frames,): field 1 of each MQ1 header; -1 from the first bad message on.
    bad : int
        -1 if every message is good, else the index of the first bad one.
    reason : str
        ``""``, or what is wrong: ``"no 'MPX,' prefix"``, ``"length 0000001234 != 1234"``,
        ``"no ',' after the length"``, ``"no 'MQ1,' header"``, ``"bad frame number"``.
    """
    data = _as_buffer(buf)
    if header_bytes < 5 or message_bytes < 15 + header_bytes or n_frames < 0:
        raise ValueError(f"bad sizes: {n_frames} messages, {message_bytes} and {header_bytes} B")
    if data.size < n_frames * message_bytes:
        raise ValueError(f"{data.size} bytes: too few for {n_frames} x {message_bytes} bytes")
    numbers = np.full(n_frames, -1, np.int64)
    bad, code = _scan(data, n_frames, message_bytes, header_bytes, numbers)
    if bad < 0:
        return numbers, -1, ""
    if code == 2:
        start = bad * message_bytes + 4
        digits = data[start : start + 10].tobytes().decode("ascii", "backslashreplace")
        return numbers, int(bad), f"length {digits} != {message_bytes - 14}"
    return numbers, int(bad), _REASONS[code]
