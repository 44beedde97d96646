"""The file opens the way EMD 1.0 readers (emdfile/py4DSTEM, RosettaSciIO) open it."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from bluestem.frames import FRAMES_PATH, FrameWriter
from bluestem.frames.layout import to_attr

CAL = {"scan_step": (2e-10, 3e-10), "angle_per_pixel": 1e-3}


@pytest.fixture
def written(tmp_path):
    data = np.random.default_rng(0).poisson(5, size=(3, 4, 8, 8)).astype(np.uint16)
    path = tmp_path / "scan.emd"
    with FrameWriter(
        path,
        scan_shape=(3, 4),
        frame_shape=(8, 8),
        dtype=np.uint16,
        calibration=CAL,
        metadata={"microscope": {"high_tension": 2e5}},
    ) as w:
        w.submit(0, data.reshape(-1, 8, 8))
    return path, data


def test_emd_1_0_tree_as_emdfile_checks_it(written):
    path, data = written
    with h5py.File(path, "r") as f:
        # emdfile._is_EMD_file and _get_EMD_rootgroups, spelled out
        assert f.attrs["emd_group_type"] == "file"
        assert (f.attrs["version_major"], f.attrs["version_minor"]) == (1, 0)
        roots = [k for k in f if f[k].attrs.get("emd_group_type") == "root"]
        assert roots == ["bluestem"]
        array = f["bluestem/frames"]
        assert array.attrs["emd_group_type"] == "array"
        assert array.attrs["python_class"] == "Array"
        assert array["data"].attrs["units"] == "counts"
        np.testing.assert_array_equal(array["data"][...], data)
        # emdfile reads dim0..dim{rank-1}, each a linear vector stored as two values
        for n in range(4):
            dim = array[f"dim{n}"]
            assert dim.shape == (2,)
            assert {"name", "units"} <= set(dim.attrs)
        assert f[FRAMES_PATH] == array["data"]


def test_rosettasciio_reads_data_and_axes(written):
    emd = pytest.importorskip("rsciio.emd")
    path, data = written
    (signal,) = emd.file_reader(str(path))
    np.testing.assert_array_equal(signal["data"], data)
    axes = [(a["name"], a["units"], a["scale"]) for a in signal["axes"]]
    assert axes == [("y", "m", 2e-10), ("x", "m", 3e-10), ("ky", "mrad", 1.0), ("kx", "mrad", 1.0)]


def test_uncalibrated_axes_are_pixels(tmp_path):
    path = tmp_path / "plain.h5"
    with FrameWriter(path, scan_shape=(2, 2), frame_shape=(4, 4), dtype=np.uint8) as w:
        w.submit(0, np.ones((4, 4, 4), np.uint8))
    with h5py.File(path, "r") as f:
        units = [f[f"bluestem/frames/dim{n}"].attrs["units"] for n in range(4)]
    assert units == ["pixels"] * 4


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (None, "null"),
        (3, 3),
        ("text", "text"),
        ({"a": 1}, '{"a": 1}'),
        ([1, [2, 3]], "[1, [2, 3]]"),
        (object, str(object)),
    ],
)
def test_attribute_conversion(value, stored):
    assert to_attr(value) == stored


def test_numeric_sequences_stay_arrays():
    np.testing.assert_array_equal(to_attr((1.5, 2.5)), [1.5, 2.5])
    assert to_attr(True) is np.True_
