"""A run's reduction spec from plan arguments and the instrument state as read back."""

from __future__ import annotations

import numpy as np
import pytest

from bluestem.reduce import (
    ReductionSpec,
    VirtualDetector,
    check_reductions,
    resolve_reductions,
    run_spec,
)

K = 64


def state(*, alpha_mrad=20.0, mrad_per_px=1.0):
    """What the plans' instrument_state puts in a start document (the keys used)."""
    return {
        "detector": {"cam_array_size_y": K, "cam_array_size_x": K},
        "calibration": {"angle_per_pixel_mrad": mrad_per_px},
        "microscope": {"convergence_angle": alpha_mrad},
    }


def test_default_radii_come_from_the_probe_disc():
    spec = resolve_reductions(None, state())
    bf, adf = spec.detectors
    disc = 20.0 / 1.0  # convergence semi-angle / angle per pixel, in pixels
    assert (bf.name, bf.kind, bf.params["radius"]) == ("bf", "disk", 0.5 * disc)
    assert adf.kind == "annulus" and adf.params["inner"] == pytest.approx(1.1 * disc)
    assert adf.params["outer"] == pytest.approx(0.95 * (K / 2 - 1))
    assert spec.com and spec.angle_per_pixel == pytest.approx(1e-3)
    assert spec.centre == (K // 2, K // 2)


def test_without_a_usable_disc_the_spec_default_applies():
    assert resolve_reductions(None, state(alpha_mrad=80.0)) == ReductionSpec.default(
        (K, K), angle_per_pixel=1e-3
    )


def test_shorthand_masks_com_mask_rotation_and_false():
    left = np.zeros((K, K), np.float32)
    left[:, : K // 2] = 0.25
    top = np.zeros((K, K), bool)
    top[: K // 2] = True
    spec = resolve_reductions(
        check_reductions({"bf": 5, "masks": {"left": left}, "com_mask": top, "rotation": 12.0}),
        state(),
    )
    assert [d.name for d in spec.detectors] == ["bf", "adf", "left"]
    assert spec.detectors[0].params["radius"] == 5
    assert np.array_equal(spec.masks()["left"], left)
    assert np.array_equal(spec.com_mask, top) and spec.rotation_deg == 12.0
    assert resolve_reductions(False, state()) is None
    recorded = spec.to_dict()
    assert check_reductions(recorded) == spec  # a recorded spec is taken as it is


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("bf", r"reductions='bf': allowed None \(BF \+ ADF \+ COM\), False"),
        ({"bff": 3}, r"unknown key 'bff'; allowed: bf, adf"),
        ({"bf": -1.0}, r"-1"),
        ({"adf": (40.0, 20.0)}, r"40"),
        ({"masks": {"m": np.ones((8, 8))}}, r"mask 'm' has shape \(8, 8\); allowed: the frame"),
        ({"com_mask": np.ones((8, 8), bool)}, r"com_mask has shape \(8, 8\)"),
    ],
)
def test_bad_arguments_are_refused_by_name(value, message):
    with pytest.raises(ValueError, match=message):
        resolve_reductions(check_reductions(value), state())


def test_run_spec_uses_the_recorded_spec_or_exactly_the_flags():
    recorded = resolve_reductions(None, state())
    start = {**state(), "reduction": recorded.to_dict()}
    assert run_spec(start) == recorded
    assert run_spec(state()) == recorded  # none recorded: the default for that state
    only = run_spec(start, {"bf": 7.0})
    assert only.detectors == (VirtualDetector("bf", "disk", {"radius": 7.0}),)
    assert not only.com
    mask = np.ones((K, K), bool)
    with_com = run_spec(start, {"adf": (10.0, 20.0), "com_mask": mask})
    assert with_com.com and with_com.detectors[0].kind == "annulus"
