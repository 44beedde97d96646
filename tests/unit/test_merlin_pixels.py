"""Merlin pixel packings (docs/merlin.md, "Pixel data") against independent encoders.

The reference encoders below follow the documented rules literally, in plain Python over
each chip row (``struct`` for the big-endian values), and build the quad segments from the
assembled frame with the document's index formulas; none of them calls pixels.py.
"""

from __future__ import annotations

import functools
import struct

import numpy as np
import pytest

from bluestem.ioc.merlin.messages import scan_block
from bluestem.ioc.merlin.pixels import (
    CHIP,
    DEPTHS,
    decode_block,
    frame_shape,
    output_dtype,
    pack_frames,
    payload_bytes,
    pixel_depth,
    sent_shape,
)

N_FRAMES = 3
CASES = [(d, raw, chips) for d in DEPTHS for raw in (False, True) for chips in (1, 4)]
IDS = [f"{d}bit-{'raw' if raw else 'binary'}-{chips}chip" for d, raw, chips in CASES]


# --- independent reference encoders ---------------------------------------------------------


def segments(image: np.ndarray, chips: int) -> list[np.ndarray]:
    """The chip images in stream order s = 0 … 3, from the assembled frame.

    Top-left = segment 3, top-right = segment 2; bottom-left = segment 1 and bottom-right
    = segment 0, each rotated by 180°: assembled[256 + r, c (+ 256)] = seg[255 - r, 255 - c].
    """
    if chips == 1:
        return [image]
    r = np.arange(CHIP)[:, None]
    c = np.arange(CHIP)[None, :]
    seg1 = image[256 + (255 - r), 255 - c]
    seg0 = image[256 + (255 - r), 256 + (255 - c)]
    return [seg0, seg1, image[:256, 256:], image[:256, :256]]


def raw_row_1(row: list[int]) -> bytes:
    # Word w, stream byte j: pixels 64*w + 8*(7 - j) + b, bit b least significant first.
    out = bytearray()
    for w in range(4):
        for j in range(8):
            out.append(sum((row[64 * w + 8 * (7 - j) + b] & 1) << b for b in range(8)))
    return bytes(out)


def raw_row_6(row: list[int]) -> bytes:
    # Within each group g of 8, stream byte j holds pixel 8*g + 7 - j.
    return bytes(row[8 * g + 7 - j] for g in range(32) for j in range(8))


def raw_row_12(row: list[int]) -> bytes:
    # Within each group g of 4, big-endian value j holds pixel 4*g + 3 - j.
    return struct.pack(">256H", *(row[4 * g + 3 - j] for g in range(64) for j in range(4)))


def reference(frame: np.ndarray, depth: int, raw: bool, chips: int) -> bytes:
    """One frame's pixel data, from the rules."""
    if not raw:
        code = {1: "B", 6: "B", 12: "H", 24: "I"}[depth]
        values = [int(v) for v in frame.ravel()]
        return struct.pack(f">{len(values)}{code}", *values)
    frame = frame.astype(np.int64)
    images = [frame >> 12, frame & 0xFFF] if depth == 24 else [frame]
    encode = {1: raw_row_1, 6: raw_row_6, 12: raw_row_12, 24: raw_row_12}[depth]
    out = bytearray()
    for image in images:
        segs = [seg.tolist() for seg in segments(image, chips)]
        for r in range(CHIP):
            for seg in segs:
                out += encode(seg[r])
    return bytes(out)


@functools.cache
def case(depth: int, raw: bool, chips: int) -> tuple[np.ndarray, tuple[bytes, ...]]:
    """Random frames (with 0 and the maximum in them) and their reference pixel data."""
    rng = np.random.default_rng(1000 * depth + 10 * chips + raw)
    ky, kx = frame_shape(chips)
    top = 2**depth - 1
    frames = rng.integers(0, top, size=(N_FRAMES, ky, kx), endpoint=True)
    frames[0, 0, :3] = (top, 0, top)
    frames[-1, -1, -3:] = (0, top, 0)
    frames = frames.astype(output_dtype(depth))
    return frames, tuple(reference(f, depth, raw, chips) for f in frames)


def framed_buffer(payloads, headers=(399, 13, 1000)):
    """Payloads with junk between them (odd sizes: unaligned offsets); returns (buf, offsets)."""
    rng = np.random.default_rng(7)
    parts, offsets, at = [], [], 0
    for i, payload in enumerate(payloads):
        junk = rng.integers(0, 256, headers[i % len(headers)], dtype=np.uint8).tobytes()
        parts += [junk, payload]
        offsets.append(at + len(junk))
        at += len(junk) + len(payload)
    parts.append(b"\xff" * 5)
    return np.frombuffer(bytearray(b"".join(parts)), np.uint8), np.array(offsets, np.int64)


# --- the reference itself, on a hand-made row -------------------------------------------------


def test_reference_rows_by_hand():
    row = list(range(256))
    assert raw_row_6(row)[:16] == bytes([7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8])
    assert raw_row_12(row)[:8] == bytes([0, 3, 0, 2, 0, 1, 0, 0])
    bits = [0] * 256
    bits[56] = bits[1] = bits[63 + 64] = 1  # word 0 byte 0 bit 0; word 0 byte 7 bit 1; ...
    packed = raw_row_1(bits)
    assert len(packed) == 32
    assert packed[0] == 0x01 and packed[7] == 0x02 and packed[8] == 0x80
    assert sum(packed) == 0x01 + 0x02 + 0x80


# --- shapes and sizes -----------------------------------------------------------------------


def test_shapes_tags_dtypes_sizes():
    assert frame_shape(1) == (256, 256) and frame_shape(4) == (512, 512)
    assert sent_shape(1, False) == sent_shape(1, True) == (256, 256)
    assert sent_shape(4, False) == (512, 512) and sent_shape(4, True) == (256, 1024)
    assert [pixel_depth(d, False) for d in DEPTHS] == ["U01", "U08", "U16", "U32"]
    assert {pixel_depth(d, True) for d in DEPTHS} == {"R64"}
    assert [output_dtype(d) for d in DEPTHS] == [np.uint8, np.uint8, np.uint16, np.uint32]
    px = 256 * 256
    assert [payload_bytes(d, False, 1) for d in DEPTHS] == [px, px, 2 * px, 4 * px]
    assert [payload_bytes(d, False, 4) for d in DEPTHS] == [4 * px, 4 * px, 8 * px, 16 * px]
    assert [payload_bytes(d, True, 1) for d in DEPTHS] == [8192, 65536, 131072, 262144]
    assert [payload_bytes(d, True, 4) for d in DEPTHS] == [32768, 262144, 524288, 1048576]


@pytest.mark.parametrize("bad", [0, 2, 3, 8])
def test_bad_chips_refused(bad):
    frames = np.zeros((1, 256, 256), np.uint8)
    out = np.zeros((1, 256, 256), np.uint8)
    calls = [
        lambda: frame_shape(bad),
        lambda: sent_shape(bad, True),
        lambda: payload_bytes(6, False, bad),
        lambda: pack_frames(frames, 6, False, bad),
        lambda: decode_block(np.zeros(70000, np.uint8), [0], out, 6, False, bad),
    ]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        assert str(bad) in str(info.value) and "(1, 4)" in str(info.value)


@pytest.mark.parametrize("bad", [0, 8, 16, 32])
def test_bad_depth_refused(bad):
    frames = np.zeros((1, 256, 256), np.uint8)
    out = np.zeros((1, 256, 256), np.uint32)
    calls = [
        lambda: pixel_depth(bad, False),
        lambda: pixel_depth(bad, True),
        lambda: output_dtype(bad),
        lambda: payload_bytes(bad, True, 1),
        lambda: pack_frames(frames, bad, True, 1),
        lambda: decode_block(np.zeros(300000, np.uint8), [0], out, bad, True, 1),
    ]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        assert str(bad) in str(info.value) and "(1, 6, 12, 24)" in str(info.value)


# --- packing and decoding -------------------------------------------------------------------


@pytest.mark.parametrize(("depth", "raw", "chips"), CASES, ids=IDS)
def test_pack_matches_reference(depth, raw, chips):
    frames, expected = case(depth, raw, chips)
    packed = pack_frames(frames, depth, raw, chips)
    assert packed.dtype == np.uint8
    assert packed.shape == (N_FRAMES, payload_bytes(depth, raw, chips))
    for i in range(N_FRAMES):
        assert packed[i].tobytes() == expected[i], f"frame {i}"


@pytest.mark.parametrize(("depth", "raw", "chips"), CASES, ids=IDS)
def test_decode_reference(depth, raw, chips):
    frames, expected = case(depth, raw, chips)
    buf, offsets = framed_buffer(expected)
    assert (offsets % 2).any()  # unaligned payloads
    out = np.full(frames.shape, 0xAB, output_dtype(depth))
    decode_block(buf, offsets, out, depth, raw, chips)
    np.testing.assert_array_equal(out, frames)


@pytest.mark.parametrize(
    ("depth", "raw", "dtype"),
    [(1, True, np.uint16), (6, True, np.uint32), (12, True, np.uint32)]
    + [(d, False, t) for d in DEPTHS for t in (np.uint16, np.uint32) if 8 * t().itemsize > d],
)
def test_decode_into_wider_dtype(depth, raw, dtype):
    frames, expected = case(depth, raw, 1)
    buf, offsets = framed_buffer(expected)
    out = np.full(frames.shape, np.iinfo(dtype).max, dtype)
    decode_block(buf, offsets, out, depth, raw, 1)
    np.testing.assert_array_equal(out, frames)


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("dtype", [np.int64, np.int16, np.uint32, np.int32])
def test_pack_any_integer_dtype(raw, dtype):
    frames, expected = case(12, raw, 1)
    packed = pack_frames(frames.astype(dtype), 12, raw, 1)
    assert [p.tobytes() for p in packed] == list(expected)


def test_pack_empty_block():
    assert pack_frames(np.zeros((0, 512, 512), np.uint16), 12, True, 4).shape == (0, 524288)
    decode_block(np.zeros(10, np.uint8), [], np.zeros((0, 256, 256), np.uint8), 6, True, 1)


@pytest.mark.parametrize(("depth", "raw"), [(d, r) for d in DEPTHS for r in (False, True)])
def test_value_above_range_refused(depth, raw):
    frames = case(depth, raw, 1)[0].copy()
    frames[1, 17, 200] = 2**depth  # the frames' own dtype: the kernel's check
    with pytest.raises(ValueError, match=rf"\b{2**depth}\b.*0 \.\. {2**depth - 1}"):
        pack_frames(frames, depth, raw, 1)
    wide = frames.astype(np.int64)
    wide[2, 3, 4] = 2**depth + 12345  # another dtype: checked before the cast
    with pytest.raises(ValueError, match=rf"\b{2**depth + 12345}\b.*0 \.\. {2**depth - 1}"):
        pack_frames(wide, depth, raw, 1)


def test_negative_value_and_bad_frames_refused():
    frames = np.zeros((2, 256, 256), np.int16)
    frames[1, 2, 3] = -5
    with pytest.raises(ValueError, match=r"-5\b.*0 \.\. 4095"):
        pack_frames(frames, 12, True, 1)
    with pytest.raises(TypeError, match="integer"):
        pack_frames(np.zeros((1, 256, 256), np.float32), 12, False, 1)
    with pytest.raises(ValueError, match="shape"):
        pack_frames(np.zeros((1, 256, 256), np.uint16), 12, False, 4)


def test_decode_refuses_bad_out():
    expected = case(12, True, 1)[1]
    buf, offsets = framed_buffer(expected)
    for out, pattern in [
        (np.zeros((3, 256, 256), np.uint8), "cannot hold 12-bit"),
        (np.zeros((3, 256, 256), np.int16), "uint8, uint16 or uint32"),
        (np.zeros((3, 256, 256), np.float32), "uint8, uint16 or uint32"),
        (np.zeros((2, 256, 256), np.uint16), "shape"),
        (np.zeros((3, 512, 512), np.uint16), "shape"),
        (np.zeros((3, 256, 512), np.uint16)[:, :, ::2], "C-contiguous"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            decode_block(buf, offsets, out, 12, True, 1)
    with pytest.raises(ValueError, match="cannot hold 24-bit"):
        decode_block(buf, offsets, np.zeros((3, 256, 256), np.uint16), 24, False, 1)


def test_decode_refuses_offset_past_end():
    frames, expected = case(6, True, 4)
    buf, offsets = framed_buffer(expected)
    size = payload_bytes(6, True, 4)
    out = np.zeros(frames.shape, np.uint8)
    late = buf.size - size + 1
    with pytest.raises(ValueError, match=rf"frame 2\b.*offset {late}\b"):
        decode_block(buf, [offsets[0], offsets[1], late], out, 6, True, 4)
    with pytest.raises(ValueError, match=r"frame 0\b.*offset -1\b"):
        decode_block(buf, [-1, offsets[1], offsets[2]], out, 6, True, 4)
    decode_block(buf, [offsets[0], offsets[1], buf.size - size], out, 6, True, 4)  # just fits


# --- scanning frame messages ----------------------------------------------------------------

HEADER = 384


def message(number: int, payload: bytes, header_bytes: int = HEADER) -> bytes:
    fields = f"MQ1,{number:06d},{header_bytes:05d},01,0256,0256,U16,   1x1,01,2026-12-02"
    body = fields.encode().ljust(header_bytes, b" ") + payload
    return b"MPX," + f"{len(body) + 1:010d}".encode() + b"," + body


def messages(numbers, payload=b"\x00" * 64) -> tuple[bytearray, int]:
    parts = [message(n, payload) for n in numbers]
    return bytearray(b"".join(parts)), len(parts[0])


def test_scan_good_block_keeps_skipped_numbers():
    buf, size = messages([1, 2, 3, 5, 1234567])
    numbers, bad, reason = scan_block(np.frombuffer(buf, np.uint8), 5, size, HEADER)
    assert numbers.dtype == np.int64
    assert numbers.tolist() == [1, 2, 3, 5, 1234567]
    assert (bad, reason) == (-1, "")
    numbers, bad, _ = scan_block(bytes(buf), 3, size, HEADER)  # read-only bytes; a prefix
    assert numbers.tolist() == [1, 2, 3] and bad == -1


@pytest.mark.parametrize(
    ("index", "at", "new", "reason"),
    [
        (2, 0, b"MPY,", "no 'MPX,' prefix"),
        (0, 0, b"mpx,", "no 'MPX,' prefix"),
        (1, 4, b"0000001234", "length 0000001234 != {length}"),
        (1, 4, b"00000x0123", "length 00000x0123 != {length}"),
        (3, 14, b";", "no ',' after the length"),
        (3, 15, b"MQ2,", "no 'MQ1,' header"),
        (1, 19, b"00a001", "bad frame number"),
        (2, 19, b",", "bad frame number"),
    ],
)
def test_scan_reports_first_bad_message(index, at, new, reason):
    buf, size = messages([1, 2, 3, 5])
    start = index * size + at
    buf[start : start + len(new)] = new
    if index < 3:  # a later bad message is not the one reported
        buf[3 * size : 3 * size + 4] = b"XXXX"
    numbers, bad, got = scan_block(np.frombuffer(buf, np.uint8), 4, size, HEADER)
    assert bad == index
    assert got == reason.format(length=size - 14)
    assert numbers.tolist() == [1, 2, 3, 5][:index] + [-1] * (4 - index)


def test_scan_refuses_short_buffer():
    buf, size = messages([1, 2])
    with pytest.raises(ValueError, match="too few"):
        scan_block(np.frombuffer(buf, np.uint8), 3, size, HEADER)


@pytest.mark.parametrize(("depth", "raw", "chips"), [(12, True, 4), (24, False, 1)])
def test_scan_then_decode(depth, raw, chips):
    frames, expected = case(depth, raw, chips)
    header = 768 if chips == 4 else 384
    parts = [message(n, p, header) for n, p in zip((7, 8, 9), expected, strict=True)]
    buf = bytearray(b"".join(parts))
    size = len(buf) // N_FRAMES
    data = np.frombuffer(buf, np.uint8)
    numbers, bad, _ = scan_block(data, N_FRAMES, size, header)
    assert numbers.tolist() == [7, 8, 9] and bad == -1
    offsets = 15 + header + np.arange(N_FRAMES) * size
    out = np.zeros(frames.shape, output_dtype(depth))
    decode_block(data, offsets, out, depth, raw, chips)
    np.testing.assert_array_equal(out, frames)


def test_pack_frames_into_a_reused_buffer_gives_the_same_bytes():
    frames = np.random.default_rng(9).integers(0, 4096, (3, CHIP, CHIP), dtype=np.uint16)
    size = payload_bytes(12, True, 1)
    out = np.zeros(4 * size, np.uint8)  # room for more than the frames
    for raw in (True, False):
        fresh = pack_frames(frames, 12, raw, 1)
        again = pack_frames(frames, 12, raw, 1, out=out)
        assert np.shares_memory(again, out)
        np.testing.assert_array_equal(again, fresh)
    with pytest.raises(ValueError, match="C-contiguous uint8 array of at least"):
        pack_frames(frames, 12, True, 1, out=np.zeros(size, np.uint8))
