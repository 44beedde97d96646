"""Frames from a 4D file (FileFrames, fit_frames) and the replay source's depth rule,
checked against hand-built arrays."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from bluestem.ioc.file_frames import FileFrames, fit_frames
from bluestem.ioc.replay_source import depth_of_dtype


def test_fit_frames_pads_and_crops_centred_and_saturates():
    frames = np.arange(2 * 4 * 6, dtype=np.int64).reshape(2, 4, 6) * 10
    padded = fit_frames(frames, (6, 8), depth=6)
    assert padded.shape == (2, 6, 8) and padded.dtype == np.uint32
    assert not padded[:, 0].any() and not padded[:, -1].any()  # one zero row each side
    np.testing.assert_array_equal(padded[:, 1:5, 1:7], np.minimum(frames, 63))
    cropped = fit_frames(frames, (2, 2))
    np.testing.assert_array_equal(cropped, frames[:, 1:3, 2:4])
    floats = np.array([[[np.nan, -3.0], [np.inf, 7.6]]])
    np.testing.assert_array_equal(fit_frames(floats, (2, 2)), [[[0, 0], [0, 7]]])


def test_file_frames_reads_the_largest_dataset_in_order_going_round(tmp_path):
    path = tmp_path / "f.h5"
    data = np.arange(2 * 3 * 4 * 4, dtype=np.uint16).reshape(2, 3, 4, 4)
    with h5py.File(path, "w") as f:
        f["small"] = np.zeros((2, 2, 2), np.uint16)
        f["deep/frames"] = data
    frames = FileFrames(path)
    assert (frames.dataset, frames.scan_shape, frames.frame_shape) == ("/deep/frames", (2, 3),
                                                                       (4, 4))  # fmt: skip
    flat = data.reshape(6, 4, 4)
    np.testing.assert_array_equal(frames.frames(4, 5), flat[[4, 5, 0, 1, 2]])
    frames.close()


def test_bluestem_files_name_their_frames(tmp_path):
    path = tmp_path / "own.h5"
    with h5py.File(path, "w") as f:
        f.attrs["frames_path"] = "/bluestem/frames/data"
        f["bluestem/frames/data"] = np.ones((1, 2, 4, 4), np.uint16)
        f["bigger"] = np.zeros((5, 8, 8), np.uint16)
    assert FileFrames(path).dataset == "/bluestem/frames/data"


@pytest.mark.parametrize(("dtype", "depth"), [(np.uint8, 6), (np.uint16, 12), (np.uint32, 24)])
def test_the_replayed_depth_holds_the_files_counts(dtype, depth):
    assert depth_of_dtype(dtype) == depth


def test_other_types_are_refused_naming_them():
    with pytest.raises(ValueError, match="frames of int16: allowed uint8, uint16 or uint32"):
        depth_of_dtype(np.int16)
