"""Merlin (Medipix3) pixel data: the binary and raw (``R64``) packings, both ways.

See docs/merlin.md, "Pixel data". Binary frames are big-endian unsigned integers, row by
row over the assembled frame. Raw frames are 64-bit words per 256-pixel chip row; the
manual's rules ("byte *j* holds pixel 7 − j", "value *j* holds pixel 3 − j", the LSB-first
bits of byte *j* are pixels 8·(7 − j) …) all say one thing: a word is a **big-endian
uint64** in which pixel *k* of the word's group holds bits ``k*b … k*b + b - 1``, ``b`` =
1, 8 or 16 bits a pixel; the packer builds those words. A raw 24-bit frame is two 12-bit
images (the high bits, then the low bits). In a quad raw frame each stream row holds four
chip segments; ``_geometry`` says where their rows land (segments 0 and 1 rotated 180°).
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit

__all__ = [
    "CHIP",
    "DEPTHS",
    "decode_block",
    "frame_shape",
    "output_dtype",
    "pack_frames",
    "payload_bytes",
    "pixel_depth",
    "sent_shape",
]

#: Pixels per chip side.
CHIP = 256
#: Counter depths (bits a pixel) a Merlin offers.
DEPTHS = (1, 6, 12, 24)

_CHIPS = (1, 4)
_BINARY_TAG = {1: "U01", 6: "U08", 12: "U16", 24: "U32"}
_DTYPE = {1: np.uint8, 6: np.uint8, 12: np.uint16, 24: np.uint32}
#: Bits a pixel takes in a raw word (24 bits: two images in 16-bit slots).
_RAW_BITS = {1: 1, 6: 8, 12: 16, 24: 16}
_OUT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))
# A global is frozen into the kernels as a constant: a big-endian host compiles the swaps away.
_SWAP = sys.byteorder == "little"
_M8 = np.uint64(0x00FF00FF00FF00FF)
_M16 = np.uint64(0x0000FFFF0000FFFF)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_B1 = np.uint64(0xFF00)
_M12 = np.uint64(0xFFF)
_U0 = np.uint64(0)
_U12 = np.uint64(12)


@njit(nogil=True, cache=True, inline="always")
def _to_be64(x):
    # LLVM recognises the shifts and masks as one bswap instruction.
    if _SWAP:
        x = ((x & _M8) << np.uint64(8)) | ((x >> np.uint64(8)) & _M8)
        x = ((x & _M16) << np.uint64(16)) | ((x >> np.uint64(16)) & _M16)
        x = (x << np.uint64(32)) | (x >> np.uint64(32))
    return x


# One raw kernel per depth, inlining its helpers once with literal bits, shifts and masks:
# constant trip counts let LLVM unroll and vectorise (runtime values cost 2-3x), and numba
# compiles every branch of a runtime ``if bits`` (``literally`` did not prune them: 8 s
# and 100x slower). A second inlined copy doubles the compilation. Slices indexed from 0
# drop numba's negative-index wraparound. Rotated segments go through a scratch row.


@njit(nogil=True, cache=True, inline="always")
def _pack_seg(seg, words, i, bits, shift, mask):
    ppw = 64 // bits
    seen = np.uint64(0)
    for w in range(CHIP // ppw):
        acc = np.uint64(0)
        for k in range(ppw):
            x = np.uint64(seg[w * ppw + k])
            seen |= x
            acc |= ((x >> shift) & mask) << np.uint64(k * bits)
        words[i + w] = _to_be64(acc)
    return seen


@njit(nogil=True, cache=True, inline="always")
def _pack_plane(frame, words, i, geom, tmp, bits, shift, mask):
    seen = np.uint64(0)
    for r in range(CHIP):
        for s in range(geom.shape[0]):
            lo = geom[s, 2]
            seg = frame[geom[s, 0] + geom[s, 1] * r, lo : lo + CHIP]
            if geom[s, 3]:
                for c in range(CHIP):
                    tmp[c] = seg[CHIP - 1 - c]
                seg = tmp
            seen |= _pack_seg(seg, words, i, bits, shift, mask)
            i += CHIP * bits // 64
    return i, seen


# The segment decoders read the stream bytes where the rules put them: LLVM vectorises the
# constant patterns, 2x faster than assembling and splitting 64-bit words.


@njit(nogil=True, cache=True, inline="always")
def _decode_seg1(src, seg, shift):
    for w in range(4):
        for m in range(8):
            byte = src[8 * w + 7 - m]
            for b in range(8):
                seg[64 * w + 8 * m + b] = np.uint64((byte >> b) & 1) << shift


@njit(nogil=True, cache=True, inline="always")
def _decode_seg8(src, seg, shift):
    for w in range(32):
        for k in range(8):
            seg[8 * w + k] = np.uint64(src[8 * w + 7 - k]) << shift


@njit(nogil=True, cache=True, inline="always")
def _decode_seg16(src, seg, shift):
    for w in range(64):
        for k in range(4):
            j = 8 * w + 6 - 2 * k
            seg[4 * w + k] = np.uint64((np.uint32(src[j]) << 8) | src[j + 1]) << shift


@njit(nogil=True, cache=True, inline="always")
def _decode_plane(buf, o, frame, geom, tmp, decode_seg, row_bytes, shift, first):
    for r in range(CHIP):
        for s in range(geom.shape[0]):
            lo, rev = geom[s, 2], geom[s, 3]
            seg = frame[geom[s, 0] + geom[s, 1] * r, lo : lo + CHIP]
            src = buf[o : o + row_bytes]
            o += row_bytes
            if first and not rev:
                decode_seg(src, seg, shift)
                continue
            decode_seg(src, tmp, shift)
            if rev and first:
                for c in range(CHIP):
                    seg[c] = tmp[CHIP - 1 - c]
            elif rev:
                for c in range(CHIP):
                    seg[c] |= tmp[CHIP - 1 - c]
            else:
                for c in range(CHIP):
                    seg[c] |= tmp[c]
    return o


@njit(nogil=True, cache=True)
def _pack_r1(frames, geom, words):
    """Raw-pack frames (n, ky, kx) into words (n, payload // 8); return the OR of the pixels."""
    seen, tmp = np.uint64(0), np.empty(CHIP, frames.dtype)
    for f in range(frames.shape[0]):
        seen |= _pack_plane(frames[f], words[f], 0, geom, tmp, 1, _U0, _ALL)[1]
    return seen


@njit(nogil=True, cache=True)
def _pack_r6(frames, geom, words):
    seen, tmp = np.uint64(0), np.empty(CHIP, frames.dtype)
    for f in range(frames.shape[0]):
        seen |= _pack_plane(frames[f], words[f], 0, geom, tmp, 8, _U0, _ALL)[1]
    return seen


@njit(nogil=True, cache=True)
def _pack_r12(frames, geom, words):
    seen, tmp = np.uint64(0), np.empty(CHIP, frames.dtype)
    for f in range(frames.shape[0]):
        seen |= _pack_plane(frames[f], words[f], 0, geom, tmp, 16, _U0, _ALL)[1]
    return seen


@njit(nogil=True, cache=True)
def _pack_r24(frames, geom, words):
    seen, tmp = np.uint64(0), np.empty(CHIP, frames.dtype)
    for f in range(frames.shape[0]):
        i, hi = _pack_plane(frames[f], words[f], 0, geom, tmp, 16, _U12, _M12)
        seen |= hi | _pack_plane(frames[f], words[f], i, geom, tmp, 16, _U0, _M12)[1]
    return seen


@njit(nogil=True, cache=True)
def _decode_r1(buf, offsets, out, geom):
    """Decode raw frames at buf[offsets[i]] into out (n, ky, kx)."""
    tmp = np.empty(CHIP, out.dtype)
    for f in range(out.shape[0]):
        _decode_plane(buf, offsets[f], out[f], geom, tmp, _decode_seg1, 32, _U0, True)


@njit(nogil=True, cache=True)
def _decode_r6(buf, offsets, out, geom):
    tmp = np.empty(CHIP, out.dtype)
    for f in range(out.shape[0]):
        _decode_plane(buf, offsets[f], out[f], geom, tmp, _decode_seg8, 256, _U0, True)


@njit(nogil=True, cache=True)
def _decode_r12(buf, offsets, out, geom):
    tmp = np.empty(CHIP, out.dtype)
    for f in range(out.shape[0]):
        _decode_plane(buf, offsets[f], out[f], geom, tmp, _decode_seg16, 512, _U0, True)


@njit(nogil=True, cache=True)
def _decode_r24(buf, offsets, out, geom):
    tmp = np.empty(CHIP, out.dtype)
    for f in range(out.shape[0]):
        o = _decode_plane(buf, offsets[f], out[f], geom, tmp, _decode_seg16, 512, _U12, True)
        _decode_plane(buf, o, out[f], geom, tmp, _decode_seg16, 512, _U0, False)


@njit(nogil=True, cache=True)
def _pack_binary(src, dst):
    """Byte-swapped copies of src (n, pixels) into dst of its dtype; return the OR."""
    seen = np.uint64(0)
    nbytes = src.itemsize
    for f in range(src.shape[0]):
        s, d = src[f], dst[f]
        for c in range(s.shape[0]):
            x = np.uint64(s[c])
            seen |= x
            if _SWAP and nbytes == 2:
                x = (x >> np.uint64(8)) | ((x & np.uint64(0xFF)) << np.uint64(8))
            elif _SWAP and nbytes == 4:
                lo = ((x & np.uint64(0xFF)) << np.uint64(24)) | (x >> np.uint64(24))
                mid = ((x & np.uint64(0xFF00)) << np.uint64(8)) | ((x >> np.uint64(8)) & _B1)
                x = lo | mid
            d[c] = x
    return seen


@njit(nogil=True, cache=True)
def _decode_binary(buf, offsets, out, nbytes):
    """Decode big-endian binary frames at buf[offsets[i]] into out (n, ky, kx)."""
    n, ky, kx = out.shape
    for f in range(n):
        o = offsets[f]
        for r in range(ky):
            row = out[f, r]
            src = buf[o : o + kx * nbytes]
            if nbytes == 1:
                for c in range(kx):
                    row[c] = src[c]
            elif nbytes == 2:
                for c in range(kx):
                    row[c] = (np.uint32(src[2 * c]) << 8) | src[2 * c + 1]
            else:
                for c in range(kx):
                    hi = (np.uint32(src[4 * c]) << 24) | (np.uint32(src[4 * c + 1]) << 16)
                    row[c] = hi | (np.uint32(src[4 * c + 2]) << 8) | src[4 * c + 3]
            o += kx * nbytes


def _check_depth(depth: int) -> None:
    if depth not in DEPTHS:
        raise ValueError(f"counter depth must be one of {DEPTHS}, not {depth!r}")


def _geometry(chips: int) -> np.ndarray:
    """Per chip segment (r0, dr, lo, rev): stream row r is assembled row r0 + dr*r, columns
    lo … lo + 255 left to right, or right to left when rev."""
    if chips == 1:
        return np.array([[0, 1, 0, 0]], np.int64)
    last = 2 * CHIP - 1
    return np.array([[last, -1, CHIP, 1], [last, -1, 0, 1], [0, 1, CHIP, 0], [0, 1, 0, 0]])


def _as_buffer(buf) -> np.ndarray:
    if isinstance(buf, np.ndarray):
        if buf.dtype != np.uint8 or not buf.flags.c_contiguous:
            raise ValueError(f"buffer must be a C-contiguous uint8 array, not {buf.dtype}")
        return buf.reshape(-1)
    return np.frombuffer(buf, dtype=np.uint8)


def _check_values(frames: np.ndarray, depth: int) -> None:
    top, info = (1 << depth) - 1, np.iinfo(frames.dtype)
    hi = int(frames.max()) if frames.size and info.max > top else 0
    lo = int(frames.min()) if frames.size and info.min < 0 else 0
    if hi > top or lo < 0:
        found, which = (hi, "largest") if hi > top else (lo, "smallest")
        raise ValueError(
            f"pixel value {found} (the {which} found) is outside the {depth}-bit range 0 .. {top}"
        )


def frame_shape(chips: int) -> tuple[int, int]:
    """(ky, kx) of an assembled frame: (256, 256) for 1 chip, (512, 512) for 4 (a quad)."""
    if chips not in _CHIPS:
        raise ValueError(f"number of chips must be one of {_CHIPS}, not {chips!r}")
    return (CHIP, CHIP) if chips == 1 else (2 * CHIP, 2 * CHIP)


def pixel_depth(depth: int, raw: bool) -> str:
    """The MQ1 header's pixel-depth tag: ``U01 U08 U16 U32`` (binary) or ``R64`` (raw)."""
    _check_depth(depth)
    return "R64" if raw else _BINARY_TAG[depth]


def output_dtype(depth: int) -> np.dtype:
    """dtype of decoded frames: uint8 for 1 and 6 bits, uint16 for 12, uint32 for 24."""
    _check_depth(depth)
    return np.dtype(_DTYPE[depth])


def payload_bytes(depth: int, raw: bool, chips: int) -> int:
    """Bytes of one frame's pixel data (after its MQ1 header).

    Binary: pixels x 1, 1, 2, 4 bytes (1, 6, 12, 24 bits). Raw: 256 rows x `chips` x 32,
    256, 512 bytes a chip row (1, 6, 12 bits); 24 bits twice the 12-bit size.
    """
    ky, kx = frame_shape(chips)
    dtype = output_dtype(depth)
    if not raw:
        return ky * kx * dtype.itemsize
    return (2 if depth == 24 else 1) * CHIP * chips * CHIP * _RAW_BITS[depth] // 8


def sent_shape(chips: int, raw: bool) -> tuple[int, int]:
    """(rows, columns) of a frame as sent (the MQ1 header's Y, X); quad raw is (256, 1024)."""
    shape = frame_shape(chips)
    return (CHIP, 4 * CHIP) if raw and chips == 4 else shape


def pack_frames(frames: np.ndarray, depth: int, raw: bool, chips: int, *,
                out: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Encode assembled frames as the pixel data of the data stream.

    Parameters
    ----------
    frames : numpy.ndarray
        (n, ky, kx), ``(ky, kx) == frame_shape(chips)``, any integer dtype, values within
        0 … 2**depth - 1.
    depth : int
        Counter depth, one of `DEPTHS`.
    raw : bool
        Raw (``R64``) rather than binary (``U..``) pixel data.
    chips : int
        1 or 4.
    out : numpy.ndarray, optional
        Where to pack: a C-contiguous uint8 array of at least ``n * payload_bytes`` bytes
        (reused from call to call, it spares a fresh allocation's page faults).

    Returns
    -------
    numpy.ndarray
        uint8 (n, payload_bytes(depth, raw, chips)): row i is frame i's pixel data (a
        view of ``out`` when given).

    Raises
    ------
    TypeError
        If `frames` is not of an integer dtype.
    ValueError
        On a bad depth, number of chips or shape, or a value out of range (naming it).
    """
    shape = frame_shape(chips)
    dtype = output_dtype(depth)
    frames = np.asarray(frames)
    if not np.issubdtype(frames.dtype, np.integer):
        raise TypeError(f"frames must be of an integer dtype, not {frames.dtype}")
    if frames.ndim != 3 or frames.shape[1:] != shape:
        raise ValueError(f"frames must have shape (n, {shape[0]}, {shape[1]}), not {frames.shape}")
    if frames.dtype != dtype:
        # Checked before the cast, which would wrap values that do not fit.
        _check_values(frames, depth)
    source = np.ascontiguousarray(frames, dtype=dtype)
    n, size = frames.shape[0], payload_bytes(depth, raw, chips)
    word = np.dtype(np.uint64) if raw else dtype
    if out is None:
        target = np.empty((n, size // word.itemsize), word)
    else:
        flat = out.reshape(-1)
        if out.dtype != np.uint8 or not out.flags.c_contiguous or flat.size < n * size:
            raise ValueError(f"out must be a C-contiguous uint8 array of at least {n * size} "
                             f"bytes, not {out.dtype} {out.shape}")  # fmt: skip
        target = flat[: n * size].view(word).reshape(n, size // word.itemsize)
    if raw:
        kernel = {1: _pack_r1, 6: _pack_r6, 12: _pack_r12, 24: _pack_r24}[depth]
        seen = kernel(source, _geometry(chips), target) if n else 0
    else:
        seen = _pack_binary(source.reshape(n, -1), target) if n else 0
    # The kernels OR the pixels in passing: one pass over the frames, not two.
    if int(seen) >> depth:
        _check_values(frames, depth)
    return target.view(np.uint8).reshape(n, size)


def decode_block(buf, offsets, out: np.ndarray, depth: int, raw: bool, chips: int) -> None:
    """Decode a block of frames from one contiguous buffer, in one kernel call (no GIL).

    Parameters
    ----------
    buf : numpy.ndarray or buffer
        The bytes: a C-contiguous uint8 array, bytes, bytearray or memoryview.
    offsets : array_like of int
        (n,): frame i's pixel data is ``buf[offsets[i]:offsets[i] + payload_bytes(...)]``.
    out : numpy.ndarray
        (n, ky, kx), C-contiguous, uint8, uint16 or uint32 wide enough for `depth`: the
        assembled frames are written into it.
    depth, raw, chips
        As for `pack_frames`.

    Raises
    ------
    ValueError
        On a bad depth or number of chips, an `out` of the wrong dtype or shape, or a frame
        whose pixel data would run past the buffer (naming the frame and its offset).
    """
    shape = frame_shape(chips)
    _check_depth(depth)
    data = _as_buffer(buf)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1:
        raise ValueError(f"offsets must be 1-D, not of shape {offsets.shape}")
    if not isinstance(out, np.ndarray) or out.dtype not in _OUT_DTYPES:
        kind = getattr(out, "dtype", type(out).__name__)
        raise ValueError(f"out must be a uint8, uint16 or uint32 array, not {kind}")
    if out.dtype.itemsize * 8 < depth:
        raise ValueError(f"out of dtype {out.dtype} cannot hold {depth}-bit counts")
    if out.shape != (offsets.size, *shape):
        raise ValueError(f"out must have shape {(offsets.size, *shape)}, not {out.shape}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be a writeable C-contiguous array")
    size = payload_bytes(depth, raw, chips)
    bad = np.flatnonzero((offsets < 0) | (offsets > data.size - size))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"frame {i}: offset {int(offsets[i])} + {size} bytes of pixel data runs past the"
            f" buffer of {data.size} bytes"
        )
    if offsets.size and raw:
        kernel = {1: _decode_r1, 6: _decode_r6, 12: _decode_r12, 24: _decode_r24}[depth]
        kernel(data, offsets, out, _geometry(chips))
    elif offsets.size:
        _decode_binary(data, offsets, out, output_dtype(depth).itemsize)
