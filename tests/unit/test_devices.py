"""Device logic without an IOC: readback tolerance, row batching, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from bluestem.devices import ReadbackMismatch, RowBatcher, dtype_of_depth, readback_matches
from bluestem.devices.microscope import half_quantum


def test_readback_within_half_quantum():
    atol = half_quantum(0.1)
    assert readback_matches(12.34, 12.3, atol=atol)  # rounded by the hardware
    assert readback_matches(12.35, 12.4, atol=atol)
    assert not readback_matches(12.34, 12.2, atol=atol)
    assert not readback_matches(50.0, 0.0, atol=atol)  # a stuck setting
    assert readback_matches(1e-4, 1e-4 * (1 + 1e-12), rtol=1e-9)
    assert not readback_matches(1.0, float("nan"), atol=1.0)
    assert readback_matches("On", "On") and not readback_matches("On", "Off")


def test_mismatch_names_setting_request_readback():
    exc = ReadbackMismatch("P:MIC:Defocus", 50.0, 0.0, "±0.0501", 2.0)
    assert str(exc) == "P:MIC:Defocus: requested 50.0, read back 0.0 (allowed ±0.0501) after 2 s"


def test_rows_batched_from_counters():
    b = RowBatcher(rows=4, row_length=16)
    assert b.advance(captured=15) is None  # no row complete yet
    assert b.advance(captured=40) == (0, 2)  # one datum for two rows
    assert b.advance(captured=47) is None
    assert b.advance(captured=47, dropped=1) == (2, 3)  # a dropped frame completes a row
    # At the end the counters cover every visited position (dropped includes frames
    # never written): all rows of a complete scan.
    assert b.advance(captured=50, dropped=14, finished=True) == (3, 4)
    assert b.advance(captured=64, finished=True) is None
    assert b.announced == 4


def test_a_scan_stopped_early_announces_only_the_rows_it_visited():
    b = RowBatcher(rows=8, row_length=16)
    assert b.advance(captured=40) == (0, 2)
    # Stopped in row 3 (0-based): 49 positions visited, one of them dropped.
    assert b.advance(captured=48, dropped=1, finished=True) == (2, 4)
    assert b.advance(captured=48, dropped=1, finished=True) is None
    assert b.announced == 4


def test_rows_never_exceed_the_scan():
    b = RowBatcher(rows=2, row_length=3)
    assert b.advance(captured=100) == (0, 2)
    with pytest.raises(ValueError, match="rows=0"):
        RowBatcher(0, 3)


@pytest.mark.parametrize(("depth", "dtype"), [(1, np.uint8), (6, np.uint8), (12, np.uint16),
                                               ("24", np.uint32)])  # fmt: skip
def test_counter_depth_dtype(depth, dtype):
    assert dtype_of_depth(depth) == np.dtype(dtype)


def test_bad_counter_depth():
    with pytest.raises(ValueError, match="allowed 1, 6, 12, 24"):
        dtype_of_depth(16)


def test_text_description_drops_bytes_and_keeps_the_rest():
    from bluestem.devices.text import text_description

    # What ophyd's describe() gives for a caproto CHAR-waveform PV: bytes control limits.
    desc = {
        "det_hdf_file_path": {
            "source": "PV:X:DET:HDF1:FilePath_RBV",
            "dtype": "string",
            "shape": [],
            "lower_ctrl_limit": b"\x00",
            "upper_ctrl_limit": b"\x00",
        }
    }
    out = text_description(desc)
    assert out == {
        "det_hdf_file_path": {
            "source": "PV:X:DET:HDF1:FilePath_RBV",
            "dtype": "string",
            "shape": [],
        }
    }
    import json

    json.dumps(out)  # a journal line needs no special encoder for it


def test_chunk_shape_of_the_pv_drops_the_padding():
    from bluestem.devices.areadetector import chunk_shape_of

    assert chunk_shape_of(np.array([1, 8, 256, 256])) == [1, 8, 256, 256]
    assert chunk_shape_of([1, 256, 256, 0]) == [1, 256, 256]  # 3-D file, 4-element waveform
    for empty in (np.zeros(4, dtype=int), [], None):
        with pytest.raises(ValueError, match=r"allowed 1\.\.4 positive integers"):
            chunk_shape_of(empty)
