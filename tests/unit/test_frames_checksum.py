"""fletcher32 against HDF5's own filter, and direct chunk writes read back by h5py."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from bluestem.frames import fletcher32


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((1, 128, 128), np.uint16),  # one detector frame: many 360-word blocks
        ((3, 7, 5), np.uint8),  # odd byte count: the tail word path
        ((1, 1, 1), np.uint8),  # a single byte
        ((1, 1, 360), np.uint16),  # exactly one block
        ((1, 1, 361), np.uint16),  # one block and one word
        ((2, 33, 17), np.uint32),
        ((2, 5, 5), np.float32),
    ],
)
def test_fletcher32_equals_the_checksum_hdf5_stores(tmp_path, shape, dtype):
    rng = np.random.default_rng(7)
    data = (rng.random(shape) * 250).astype(dtype)
    with h5py.File(tmp_path / "ref.h5", "w") as f:
        ds = f.create_dataset("d", data=data, chunks=shape, fletcher32=True)
        mask, raw = ds.id.read_direct_chunk((0, 0, 0))
    assert mask == 0
    assert raw[:-4] == data.tobytes()
    stored = int.from_bytes(raw[-4:], "little")
    assert fletcher32(data) == stored
    assert fletcher32(raw[:-4]) == stored


def test_all_ones_words_fold_like_hdf5():
    # 0xFFFF words are the overflow worst case of the 360-word blocks.
    data = np.full(10_000, 0xFF, dtype=np.uint8)
    sum1 = sum2 = 0
    for _ in range(0, data.size, 2):
        sum1 = (sum1 + 0xFFFF) % 0xFFFF
        sum2 = (sum2 + sum1) % 0xFFFF
    # Fletcher's modulo-65535 sums; HDF5 folds with end-around carry, so 0 shows as 0xFFFF.
    expected = ((sum2 or 0xFFFF) << 16) | (sum1 or 0xFFFF)
    assert fletcher32(data) == expected


def test_direct_chunks_read_back_through_the_checksummed_filter_pipeline(tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.poisson(18, size=(4, 8, 32, 32)).astype(np.uint16)
    with h5py.File(tmp_path / "direct.h5", "w") as f:
        ds = f.create_dataset(
            "d", shape=frames.shape, dtype=frames.dtype, chunks=(1, 8, 32, 32), fletcher32=True
        )
        for y in range(4):
            body = frames[y].tobytes()
            checksum = fletcher32(body).to_bytes(4, "little")
            ds.id.write_direct_chunk((y, 0, 0, 0), body + checksum, filter_mask=0)
    with h5py.File(tmp_path / "direct.h5", "r") as f:
        np.testing.assert_array_equal(f["d"][...], frames)


def test_a_wrong_checksum_is_refused_by_hdf5(tmp_path):
    # The control for the test above: h5py really does verify the checksum.
    frame = np.arange(64, dtype=np.uint16).reshape(1, 8, 8)
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        ds = f.create_dataset(
            "d", shape=frame.shape, dtype=frame.dtype, chunks=frame.shape, fletcher32=True
        )
        bad = (fletcher32(frame) ^ 1).to_bytes(4, "little")
        ds.id.write_direct_chunk((0, 0, 0), frame.tobytes() + bad, filter_mask=0)
    with h5py.File(tmp_path / "bad.h5", "r") as f, pytest.raises(OSError):
        f["d"][...]


def serial_fletcher32(data: bytes) -> int:
    """H5_checksum_fletcher32 word by word (H5checksum.c), in plain Python."""
    sum1 = sum2 = 0
    words, i = len(data) // 2, 0
    while words:
        block = min(360, words)
        words -= block
        for _ in range(block):
            sum1 += (data[i] << 8) | data[i + 1]
            sum2 += sum1
            i += 2
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    if len(data) % 2:
        sum1 += data[i] << 8
        sum2 += sum1
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
    sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


@pytest.mark.parametrize("size", [0, 1, 2, 3, 719, 720, 721, 722, 1441, 7201, 65536])
def test_closed_form_blocks_equal_the_word_serial_recurrence(size):
    rng = np.random.default_rng(size)
    for data in (rng.integers(0, 256, size, dtype=np.uint8), np.full(size, 255, np.uint8)):
        assert fletcher32(data) == serial_fletcher32(data.tobytes())
