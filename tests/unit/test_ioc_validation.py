"""Validation of settings written to the sim IOC (no CA)."""

from __future__ import annotations

import numpy as np
import pytest

from bluestem.ioc.hdf import format_file_name
from bluestem.ioc.settings import Setting
from bluestem.ioc.validation import (
    InvalidSetting,
    Limits,
    check_choice,
    check_directory,
    check_enum,
    check_free_space,
    check_limits,
    estimate_file_bytes,
)

DWELL = Limits(0.0, 1.0, low_open=True)


@pytest.mark.parametrize("value", [1e-6, 0.5, 1.0])
def test_limits_accept_inside(value):
    assert check_limits("P:Dwell", value, DWELL, "s") == value


@pytest.mark.parametrize("value", [0.0, -1.0, 1.0001, float("nan"), float("inf")])
def test_limits_refuse_outside_naming_pv_value_and_range(value):
    with pytest.raises(InvalidSetting) as info:
        check_limits("P:Dwell", value, DWELL, "s")
    text = str(info.value)
    assert text.startswith("P:Dwell: ")
    assert f"{value:g} s" in text
    assert "allowed 0 < x <= 1 s" in text
    assert info.value.pv == "P:Dwell"


def test_integer_limits():
    shape = Limits(1, 4096, integer=True)
    assert check_limits("S", 4096, shape) == 4096
    for bad in (0, 4097, 2.5):
        with pytest.raises(InvalidSetting, match="1 <= x <= 4096, integer"):
            check_limits("S", bad, shape)
    with pytest.raises(InvalidSetting, match="not a number"):
        check_limits("S", "abc", shape)


def test_limits_describe():
    assert Limits(20, 300).describe() == "20 <= x <= 300"
    assert Limits(0, None, low_open=True).describe() == "0 < x"
    assert Limits(None, 5, high_open=True).describe() == "x < 5"


@pytest.mark.parametrize(
    "value, expected",
    [("Step", "Step"), (1, "Step"), (np.uint16(0), "Fly"), (1.0, "Step"),
     (b"Fly", "Fly"), ([b"Step"], "Step"), (np.array([1]), "Step")],
)  # fmt: skip
def test_enum_accepts_strings_and_indices(value, expected):
    assert check_enum("P:Mode", value, ("Fly", "Step")) == expected


@pytest.mark.parametrize("value", ["Bogus", 2, -1, 1.5, True, None])
def test_enum_refuses_unknown_values(value):
    with pytest.raises(InvalidSetting) as info:
        check_enum("P:Mode", value, ("Fly", "Step"))
    assert "0='Fly', 1='Step'" in str(info.value)
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_choice():
    assert check_choice("B", 2, (1, 2, 4)) == 2
    with pytest.raises(InvalidSetting, match="allowed: 1, 2, 4"):
        check_choice("B", 3, (1, 2, 4))


def test_directory(tmp_path):
    assert check_directory("F", str(tmp_path)) == str(tmp_path)
    with pytest.raises(InvalidSetting, match="does not exist"):
        check_directory("F", str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidSetting, match="not a directory"):
        check_directory("F", str(tmp_path / "file"))
    with pytest.raises(InvalidSetting, match="empty path"):
        check_directory("F", "")
    with pytest.raises(InvalidSetting, match="not writable"):
        check_directory("F", "/proc")  # writable by nobody, root included


def test_free_space(tmp_path):
    assert check_free_space("C", str(tmp_path), 1024) > 1024
    with pytest.raises(InvalidSetting, match=r"would need .* GB but only .* GB is free"):
        check_free_space("C", str(tmp_path), 10**18)


def test_file_size_estimate():
    # 4096 x 4096 scan of 1024^2 uint32 frames: 70 TB of frames plus the received map.
    assert estimate_file_bytes(4096 * 4096, (1024, 1024), 4) == 4096**2 * (4 * 1024**2 + 1)


def test_setting_readback_is_quantised():
    spec = Setting("HighTension", Limits(20, 300), quantum=0.1)
    assert spec.applied(200.04) == pytest.approx(200.0)
    assert spec.applied(199.96) == pytest.approx(200.0)
    assert spec.validate("P:HT", 120.0) == 120.0
    with pytest.raises(InvalidSetting):
        spec.validate("P:HT", 301)
    assert Setting("B", choices=(1, 2, 4)).validate("P:B", 4.0) == 4


def test_file_name_template():
    assert format_file_name("%s%s_%6.6d.h5", "/data", "scan", 7) == "/data/scan_000007.h5"
    with pytest.raises(InvalidSetting, match="not a valid template"):
        format_file_name("%s%d", "/data", "scan", 1)
