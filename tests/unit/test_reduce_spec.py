"""Virtual detector masks against their textbook definitions; the spec and its checks."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from bluestem.reduce import ReductionSpec, VirtualDetector

FRAME = (48, 40)
CENTRE = (23.4, 19.7)


def textbook(shape, centre, inside) -> np.ndarray:
    """A mask from a per-pixel predicate of (rho, phi in degrees from +x towards +y)."""
    out = np.zeros(shape, np.float32)
    for r in range(shape[0]):
        for c in range(shape[1]):
            dy, dx = r - centre[0], c - centre[1]
            phi = math.degrees(math.atan2(dy, dx)) % 360.0
            out[r, c] = 1.0 if inside(math.hypot(dy, dx), phi) else 0.0
    return out


def masks_of(det: VirtualDetector, centre=CENTRE, shape=FRAME) -> dict[str, np.ndarray]:
    return ReductionSpec(shape, centre=centre, detectors=(det,)).masks()


def test_disk_and_annulus_are_the_textbook_sets():
    disk = masks_of(VirtualDetector("bf", "disk", {"radius": 9.3}))["bf"]
    assert np.array_equal(disk, textbook(FRAME, CENTRE, lambda rho, _: rho <= 9.3))
    ring = masks_of(VirtualDetector("adf", "annulus", {"inner": 10.6, "outer": 18.2}))["adf"]
    assert np.array_equal(ring, textbook(FRAME, CENTRE, lambda rho, _: 10.6 < rho <= 18.2))
    assert disk.dtype == np.float32 and disk.shape == FRAME


@pytest.mark.parametrize(("n", "rot"), [(5, 0.0), (7, 33.0), (12, -100.0)])
def test_sectors_are_the_textbook_segments(n, rot):
    det = VirtualDetector(
        "s", "sectors", {"inner": 3.3, "outer": 17.1, "n": n, "rotation_deg": rot}
    )
    got = masks_of(det)
    assert list(got) == [f"s{i}" for i in range(n)]
    width = 360.0 / n
    for i in range(n):
        want = textbook(
            FRAME, CENTRE,
            lambda rho, phi, i=i: (
                3.3 < rho <= 17.1 and i * width <= (phi - rot) % 360 < (i + 1) * width
            ),
        )  # fmt: skip
        assert np.array_equal(got[f"s{i}"], want), i


def test_quadrants_follow_the_axes_at_rotation_zero():
    # Integer centre: segment 0 is phi in [0, 90): dx > 0 and dy >= 0 (the +x axis belongs
    # to it, the +y axis to segment 1; rows grow downwards, so on screen the segments run
    # clockwise).
    q = masks_of(VirtualDetector("q", "quadrants", {"outer": 10.0}), centre=(24.0, 20.0))
    dy, dx = np.indices(FRAME) - np.array([24, 20])[:, None, None]
    disk = np.hypot(dy, dx) <= 10.0
    centre = (dx == 0) & (dy == 0)  # atan2(0, 0) = 0: segment 0
    assert np.array_equal(q["q0"] > 0, disk & ((dx > 0) & (dy >= 0) | centre))
    assert np.array_equal(q["q1"] > 0, disk & (dx <= 0) & (dy > 0))
    assert np.array_equal(q["q2"] > 0, disk & (dx < 0) & (dy <= 0))
    assert np.array_equal(q["q3"] > 0, disk & (dx >= 0) & (dy < 0))


def test_detectors_tile_without_overlap():
    centre = (24.0, 20.0)  # integer: pixels lie exactly on radius 8
    disk = masks_of(VirtualDetector("a", "disk", {"radius": 8.0}), centre)["a"]
    ring = masks_of(VirtualDetector("b", "annulus", {"inner": 8.0, "outer": 15.0}), centre)["b"]
    big = masks_of(VirtualDetector("c", "disk", {"radius": 15.0}), centre)["c"]
    assert np.array_equal(disk + ring, big)
    assert disk[24, 28] == 1 and ring[24, 28] == 0  # rho == 8 exactly: in the disk only
    sectors = masks_of(
        VirtualDetector("s", "sectors", {"inner": 0.0, "outer": 15.0, "n": 9, "rotation_deg": 7}),
        centre,
    )
    assert np.array_equal(sum(sectors.values()), big)  # the centre pixel included once


def test_user_mask_is_kept_as_float32_and_read_only():
    w = np.random.default_rng(0).normal(size=FRAME)
    det = VirtualDetector("u", "user", {"weights": w})
    assert det.params["weights"].dtype == np.float32
    assert np.array_equal(masks_of(det)["u"], w.astype(np.float32))
    with pytest.raises(ValueError):
        det.params["weights"][0, 0] = 1.0
    w[0, 0] = 99.0  # the detector holds its own copy
    assert det.params["weights"][0, 0] != np.float32(99.0)


def full_spec() -> ReductionSpec:
    w = np.random.default_rng(3).uniform(-1, 1, size=FRAME)
    return ReductionSpec(
        FRAME,
        centre=CENTRE,
        detectors=(
            VirtualDetector("bf", "disk", {"radius": 9.5}),
            VirtualDetector("adf", "annulus", {"inner": 11, "outer": 19}),
            VirtualDetector("q", "quadrants", {"inner": 2.0, "outer": 15.0, "rotation_deg": 45}),
            VirtualDetector("s", "sectors", {"inner": 1.0, "outer": 12.0, "n": 6}),
            VirtualDetector("dpc", "user", {"weights": w}),
        ),
        com_radius=14.5,
        angle_per_pixel=1.1e-3,
        rotation_deg=-12.5,
        flip=True,
        sum_dp=False,
    )


def test_to_dict_round_trips_exactly_through_json():
    spec = full_spec()
    text = json.dumps(spec.to_dict())
    back = ReductionSpec.from_dict(json.loads(text))
    assert back == spec and hash(back) == hash(spec)
    assert back.to_dict() == spec.to_dict()
    assert back.digest() == spec.digest()
    for name, mask in spec.masks().items():
        assert np.array_equal(back.masks()[name], mask)
    user = spec.to_dict()["detectors"][-1]["params"]["weights"]
    raw = np.ascontiguousarray(spec.detectors[-1].params["weights"], "<f4").tobytes()
    assert user["sha256"] == hashlib.sha256(raw).hexdigest()
    assert user["shape"] == list(FRAME)


def test_digest_is_the_sha256_of_canonical_json_and_stable():
    spec = ReductionSpec.default((128, 128))
    canonical = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    assert spec.digest() == hashlib.sha256(canonical.encode()).hexdigest()
    # Pinned: a change here means stored reductions no longer match their spec digest.
    assert spec.digest() == DEFAULT_128_DIGEST
    assert ReductionSpec.default((128, 128)).digest() == spec.digest()
    assert ReductionSpec.default((128, 128), bf_radius=31).digest() != spec.digest()


DEFAULT_128_DIGEST = "71b9c8d515abe6cd0dd67e9bd222ced925343eaac13116fc57d8a8a07e270236"


def test_default_spec_radii():
    spec = ReductionSpec.default((128, 96))
    assert spec.centre == (64.0, 48.0)
    bf, adf = spec.detectors
    assert (bf.name, bf.kind, bf.params) == ("bf", "disk", {"radius": 24.0})
    edge = min(64, 48, 127 - 64, 95 - 48)
    assert adf.params == {"inner": pytest.approx(28.8), "outer": pytest.approx(0.95 * edge)}
    assert spec.com and spec.com_radius is None and spec.sum_dp and spec.max_dp
    assert spec.image_names == ("bf", "adf", "com_y", "com_x", "sum_dp", "max_dp")
    mrad = ReductionSpec.default((64, 64), angle_per_pixel=1e-3).image_names
    assert "com_y_mrad" in mrad and "com_x_mrad" in mrad


def test_tampered_user_weights_are_refused():
    d = full_spec().to_dict()
    d["detectors"][-1]["params"]["weights"]["sha256"] = "0" * 64
    with pytest.raises(ValueError, match=r"mask 'dpc'.*sha256"):
        ReductionSpec.from_dict(d)


def det(kind, **params):
    return VirtualDetector("foo", kind, params)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: det("user", weights=np.ones((64, 64))),
         r"mask 'foo' has shape \(64, 64\); allowed: the frame shape \(128, 128\)"),
        (lambda: det("disk", radius=-1), "radius -1 < 0; allowed: radius >= 0"),
        (lambda: det("disk", radius=200),
         r"radius 200 is beyond the frame; allowed: 0 <= radius <= 90\.5"),
        (lambda: det("annulus", inner=30, outer=300), "outer 300 is beyond the frame"),
        (lambda: det("annulus", inner=30, outer=20),
         "inner 30, outer 20; allowed: 0 <= inner < outer"),
        (lambda: det("sectors", outer=20, n=0), r"n = 0; allowed: 1 <= n <= 360"),
        (lambda: det("sectors", outer=20, n=2.5), "n must be an integer"),
        (lambda: det("ring", radius=3), "unknown kind 'ring'; allowed: disk, annulus"),
        (lambda: det("disk", r=3), r"unknown \['r'\] parameters; allowed: radius"),
        (lambda: det("annulus", inner=3), r"missing \['outer'\]"),
        (lambda: det("disk", radius=math.nan), "radius must be finite"),
        (lambda: det("disk", radius="3"), "radius must be a number"),
        (lambda: det("user", weights=np.full((128, 128), np.inf)), "non-finite weights"),
        (lambda: det("user", weights=np.zeros((128, 128))), "mask 'foo' is all zero"),
        (lambda: VirtualDetector("2x", "disk", {"radius": 3}), "detector name '2x'"),
    ],
)  # fmt: skip
def test_bad_detectors_are_refused_naming_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        ReductionSpec((128, 128), detectors=(make(),))


def test_a_detector_that_selects_no_pixel_is_refused():
    with pytest.raises(ValueError, match=r"foo0, foo1, foo2, foo3 select no pixel"):
        ReductionSpec(
            (128, 128), centre=(64.5, 64.5),
            detectors=(det("quadrants", inner=0.1, outer=0.3),),
        )  # fmt: skip
    with pytest.raises(ValueError, match="select no pixel"):
        ReductionSpec((128, 128), centre=(64.5, 64.5), detectors=(det("disk", radius=0.5),))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"frame_shape": (64,)}, r"frame_shape \(64,\); allowed: two integers"),
        ({"frame_shape": (1, 64)}, r"in 2\.\.4096"),
        ({"frame_shape": (64.5, 64)}, "frame_shape"),
        ({"centre": (64, 130)},
         r"centre \(64, 130\) is outside the frame; allowed: 0 <= cy <= 127"),
        ({"centre": "middle"}, "centre must be a pair"),
        ({"com": 1}, "com must be True or False"),
        ({"flip": "yes"}, "flip must be True, False or None"),
        ({"com_radius": 0}, r"com_radius = 0\.0; allowed: 0 < com_radius <= 90\.5"),
        ({"com_radius": 500}, "com_radius = 500"),
        ({"angle_per_pixel": -1e-3}, "angle_per_pixel = -0.001; allowed: a finite angle > 0"),
        ({"rotation_deg": math.inf}, "rotation_deg = inf"),
        ({"detectors": VirtualDetector("a", "disk", {"radius": 3})}, "must be a sequence"),
        ({"detectors": ("bf",)}, "must be VirtualDetector objects"),
        ({"detectors": (VirtualDetector("sum_dp", "disk", {"radius": 3}),)},
         "image name 'sum_dp' is reserved"),
        ({"detectors": (VirtualDetector("q", "quadrants", {"outer": 9}),
                        VirtualDetector("q1", "disk", {"radius": 3}))},
         "image name 'q1' is used twice"),
        ({"com": False, "sum_dp": False, "max_dp": False}, "the spec reduces nothing"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused_naming_the_value(kw, message):
    kw = {"frame_shape": (128, 128), **kw}
    with pytest.raises(ValueError, match=message):
        ReductionSpec(**kw)


def test_from_dict_refuses_unknown_versions_and_keys():
    d = ReductionSpec.default((64, 64)).to_dict()
    with pytest.raises(ValueError, match="spec version 2; allowed: 1"):
        ReductionSpec.from_dict({**d, "version": 2})
    with pytest.raises(ValueError, match=r"unknown spec keys \['colour'\]"):
        ReductionSpec.from_dict({**d, "colour": "red"})


def test_com_mask_round_trips_and_bad_masks_are_refused():
    mask = np.zeros((16, 20), bool)
    mask[2:9, 4:15] = True
    spec = ReductionSpec((16, 20), com_mask=mask)
    again = ReductionSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and np.array_equal(again.com_mask, mask)
    assert again.digest() == spec.digest() != ReductionSpec((16, 20)).digest()
    with pytest.raises(ValueError, match=r"com_mask has shape \(16, 16\); allowed: the frame "
                       r"shape \(16, 20\)"):  # fmt: skip
        ReductionSpec((16, 20), com_mask=np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="com_mask selects no pixel"):
        ReductionSpec((16, 20), com_mask=np.zeros((16, 20)))
    stored = spec.to_dict()
    stored["com_mask"]["base64"] = stored["com_mask"]["base64"][::-1]
    with pytest.raises(ValueError, match="com_mask: bad stored array"):
        ReductionSpec.from_dict(stored)
