"""Plan argument validation and metadata helpers, without an IOC."""

from __future__ import annotations

import pytest

from bluestem.plans import beam_positions, calibration, check_dwell, check_pair, check_shape


@pytest.mark.parametrize("shape", [(0, 4), (4, 4097), (4,), (4.0, 4), (True, 4), "44", None])
def test_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"allowed 2 integers, each 1\.\.4096"):
        check_shape(shape)


def test_good_shape():
    assert check_shape([16, 4096]) == (16, 4096)


@pytest.mark.parametrize("dwell", [0, -1e-6, 1.5, float("nan"), "x", None])
def test_bad_dwell(dwell):
    with pytest.raises(ValueError, match=r"dwell=.*: allowed \(0, 1\]"):
        check_dwell(dwell)


def test_pair():
    assert check_pair("fov", 10, low=0, high=1e7) == (10.0, 10.0)
    assert check_pair("fov", None, low=0, high=1e7) is None
    with pytest.raises(ValueError, match="fov=0"):
        check_pair("fov", (0, 1), low=0, high=1e7)


def test_beam_positions_centred_row_major():
    pos = beam_positions((2, 3), (1.0, 0.5))
    assert pos == [(-0.5, -0.5), (-0.5, 0.0), (-0.5, 0.5), (0.5, -0.5), (0.5, 0.0), (0.5, 0.5)]


def test_calibration_angle_per_pixel():
    cal = calibration(
        {"cam_bin_x": 2, "pixel_size": 55e-6},
        {"camera_length": 100.0},
        {"step": [0.2, 0.3], "rotation": 0.0},
    )
    # binning * pixel / camera length: 2 * 55 um / 100 mm = 1.1 mrad
    assert cal["angle_per_pixel_mrad"] == pytest.approx(1.1)
    assert cal["scan_step_nm"] == [0.2, 0.3]


def test_plans_validate_before_the_first_message():
    from bluestem.plans import dark_reference, raster, series

    with pytest.raises(ValueError, match="dwell"):
        next(raster(None, None, shape=(4, 4), dwell=2.0))
    with pytest.raises(ValueError, match="num_frames"):
        next(dark_reference(None, None, num_frames=0, acquire_time=1e-3))

    class Mic:
        SETTINGS = ("defocus",)

    with pytest.raises(ValueError, match=r"setting='focus': allowed \['defocus'\]"):
        next(series(None, None, Mic(), setting="focus", values=[1.0], dwell=1e-3))


def test_limits_are_the_instruments():
    from bluestem import instrument
    from bluestem.plans import validation

    assert validation.MAX_SHAPE == instrument.SCAN_SHAPE_MAX == 4096
    assert validation.MAX_DWELL == instrument.DWELL_MAX == 1.0
    assert validation.MAX_EXPOSURE == instrument.EXPOSURE_MAX == 10.0
