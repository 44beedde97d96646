"""The fused reduction against independent float64 numpy, and its determinism.

Accuracy scale: detector images and the COM denominator to 1e-6 relative; COM (a ratio
that can be near 0) to 1e-6 of the frame size in pixels, i.e. |error| <= 1e-6 * max(ky, kx).
"""

from __future__ import annotations

import itertools
import pickle
import threading

import numba
import numpy as np
import pytest

from bluestem.reduce import Reducer, ReductionSpec, VirtualDetector

FRAME = (48, 40)  # not square, so a swapped axis shows
CENTRE = (23.4, 19.7)
SCAN = (5, 7)  # 35 positions: not a multiple of the 4-frame group
DTYPES = ("uint8", "uint16", "uint32", "float32")


def poisson_frames(dtype: str, n: int = 35, shape=FRAME, seed: int = 0) -> np.ndarray:
    """Poisson counts with a bright disk, at a level that suits the dtype."""
    rng = np.random.default_rng(seed)
    ky, kx = shape
    rho = np.hypot(*np.indices(shape) - np.array([ky / 2 - 1.3, kx / 2 + 0.8])[:, None, None])
    level = {"uint8": 8.0, "uint16": 900.0, "uint32": 60000.0, "float32": 300.0}[dtype]
    mean = np.where(rho < min(shape) / 5, level, level / 10)
    counts = rng.poisson(mean, size=(n, ky, kx))
    if dtype == "float32":
        return (counts * 0.37).astype(np.float32)  # a gain: non-integer values
    return counts.astype(dtype)


def all_kinds(shape=FRAME, seed: int = 1) -> tuple[VirtualDetector, ...]:
    weights = np.random.default_rng(seed).uniform(0.0, 1.0, size=shape).astype(np.float32)
    return (
        VirtualDetector("bf", "disk", {"radius": 9.5}),
        VirtualDetector("adf", "annulus", {"inner": 11.0, "outer": 19.0}),
        VirtualDetector("q", "quadrants", {"inner": 2.0, "outer": 15.0, "rotation_deg": 30.0}),
        VirtualDetector("s", "sectors", {"inner": 0.0, "outer": 12.0, "n": 5, "rotation_deg": 0}),
        VirtualDetector("u", "user", {"weights": weights}),
    )


def half_plane(shape=FRAME) -> np.ndarray:
    """A COM mask: the upper half of the frame, one pixel column left out."""
    mask = np.zeros(shape, bool)
    mask[: shape[0] // 2] = True
    mask[:, 3] = False
    return mask


SPECS = {
    "bf_adf_com": lambda: ReductionSpec.default(FRAME, centre=CENTRE, angle_per_pixel=2e-3),
    "all_kinds": lambda: ReductionSpec(FRAME, centre=CENTRE, detectors=all_kinds()),
    "com_radius": lambda: ReductionSpec(
        FRAME, centre=CENTRE, detectors=all_kinds()[:3], com_radius=13.0
    ),
    "com_mask": lambda: ReductionSpec(
        FRAME, centre=CENTRE, detectors=all_kinds()[:2], com_mask=half_plane(), com_radius=14.0
    ),
    "com_only": lambda: ReductionSpec(FRAME, centre=CENTRE, sum_dp=False, max_dp=False),
    "one_mask": lambda: ReductionSpec(FRAME, centre=CENTRE, detectors=all_kinds()[:1]),
    "patterns_only": lambda: ReductionSpec(FRAME, com=False),
}


def reference(spec: ReductionSpec, frames: np.ndarray) -> dict[str, np.ndarray]:
    """Textbook float64 numpy: weighted sums and COM = sum(r I) / sum(I)."""
    f = frames.astype(np.float64)
    out = {
        name: np.einsum("nyx,yx->n", f, m.astype(np.float64)) for name, m in spec.masks().items()
    }
    if spec.com:
        ky, kx = spec.frame_shape
        rr, cc = np.indices((ky, kx), dtype=np.float64)
        dy, dx = rr - spec.centre[0], cc - spec.centre[1]
        region = np.ones((ky, kx))
        if spec.com_radius is not None:
            region = region * (np.hypot(dy, dx) <= spec.com_radius)
        if spec.com_mask is not None:
            region = region * spec.com_mask
        total = np.einsum("nyx,yx->n", f, region)
        out["com_y"] = np.einsum("nyx,yx->n", f, dy * region) / total
        out["com_x"] = np.einsum("nyx,yx->n", f, dx * region) / total
    out["sum_dp"] = f.sum(axis=0)
    out["max_dp"] = f.max(axis=0)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", sorted(SPECS))
def test_reducer_matches_float64_numpy(which, dtype):
    spec = SPECS[which]()
    frames = poisson_frames(dtype)
    red = Reducer(spec, SCAN)
    red.add(0, frames)
    got, want = red.images(), reference(spec, frames)
    assert set(got) == set(spec.image_names)
    for name in spec.detector_images:
        rel = np.abs(got[name].ravel() - want[name]) / np.abs(want[name])
        assert rel.max() <= 1e-6, (name, rel.max())
    if spec.com:
        scale = max(spec.frame_shape)
        for axis in "yx":
            err = np.abs(got[f"com_{axis}"].ravel() - want[f"com_{axis}"])
            assert err.max() <= 1e-6 * scale, (axis, err.max())
    if spec.angle_per_pixel:
        for axis in "yx":
            mrad = got[f"com_{axis}"] * spec.angle_per_pixel * 1e3
            assert np.allclose(got[f"com_{axis}_mrad"], mrad, rtol=1e-14, atol=0)
    if spec.sum_dp:
        if dtype == "float32":
            assert np.allclose(got["sum_dp"], want["sum_dp"], rtol=1e-12, atol=0)
        else:
            assert np.array_equal(got["sum_dp"], want["sum_dp"])  # exact for integers
    if spec.max_dp:
        assert np.array_equal(got["max_dp"], want["max_dp"])


def test_a_realistic_frame_keeps_the_accuracy():
    # 256 pixels per detector row, counts in the thousands: the float32 row sums must still
    # stay within 1e-6 once summed over rows in float64.
    spec = ReductionSpec.default((256, 256))
    frames = poisson_frames("uint16", n=6, shape=(256, 256))
    red = Reducer(spec, (1, 6))
    red.add(0, frames)
    got, want = red.images(), reference(spec, frames)
    for name in ("bf", "adf"):
        assert (np.abs(got[name].ravel() - want[name]) / want[name]).max() <= 1e-6
    for axis in "yx":
        assert np.abs(got[f"com_{axis}"].ravel() - want[f"com_{axis}"]).max() <= 256e-6


def split_images(spec, frames, sizes, order=None) -> dict[str, np.ndarray]:
    bounds = np.cumsum([0, *sizes])
    assert bounds[-1] == len(frames)
    blocks = list(itertools.pairwise(bounds))
    red = Reducer(spec, SCAN)
    for i in order or range(len(blocks)):
        a, b = blocks[i]
        red.add(int(a), frames[a:b])
    return red.images()


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name], equal_nan=True), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_frame_is_bitwise_the_same_in_any_block(dtype):
    spec = SPECS["all_kinds"]()
    frames = poisson_frames(dtype)
    whole = split_images(spec, frames, [35])
    # Every frame lands at other offsets inside its group of four, and in short tails.
    for sizes, order in (
        ([1] * 35, None),
        ([3, 5, 2, 7, 1, 9, 8], None),
        ([6, 6, 6, 6, 6, 5], [5, 2, 0, 4, 1, 3]),
        ([2, 33], [1, 0]),
    ):
        got = split_images(spec, frames, sizes, order)
        if dtype == "float32":  # sum_dp of non-integers depends on the split's rounding
            assert np.allclose(got.pop("sum_dp"), whole["sum_dp"], rtol=1e-12, atol=0)
            assert_same(got, {k: v for k, v in whole.items() if k != "sum_dp"})
        else:
            assert_same(got, whole)


def test_thread_count_layout_and_read_only_input_do_not_change_a_bit():
    spec = SPECS["bf_adf_com"]()
    frames = poisson_frames("uint16")
    base = split_images(spec, frames, [35])
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert_same(split_images(spec, frames, [35]), base)
    finally:
        numba.set_num_threads(threads)
    strided = np.zeros((35, *FRAME, 2), np.uint16)
    strided[..., 1] = frames
    red = Reducer(spec, SCAN)
    red.add(0, strided[..., 1])
    assert_same(red.images(), base)
    # Read-only frames (a memory map, np.frombuffer) are a separate numba type: same bits.
    readonly = frames.copy()
    readonly.flags.writeable = False
    red = Reducer(spec, SCAN)
    red.add(0, readonly)
    assert_same(red.images(), base)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_combine_of_parts_equals_one_sequential_reducer(dtype):
    spec = SPECS["all_kinds"]()
    frames = poisson_frames(dtype)
    sequential = Reducer(spec, SCAN)
    for a in range(0, 35, 7):
        sequential.add(a, frames[a : a + 7])
    # As a distributed run would: separate reducers, results shipped by pickle.
    parts = [
        pickle.loads(pickle.dumps(Reducer(spec, SCAN).partial(a, frames[a:b])))
        for a, b in ((28, 35), (0, 7), (14, 28), (7, 14))
    ]
    combined = Reducer.combine(parts).images()
    want = sequential.images()
    if dtype == "float32":
        assert np.allclose(combined.pop("sum_dp"), want.pop("sum_dp"), rtol=1e-12, atol=0)
    assert_same(combined, want)
    # Whole reducers combine too, and survive pickling themselves.
    halves = [Reducer(spec, SCAN), Reducer(spec, SCAN)]
    halves[0].add(0, frames[:20])
    halves[1].add(20, frames[20:])
    halves[1] = pickle.loads(pickle.dumps(halves[1]))
    again = Reducer.combine(halves).images()
    if dtype == "float32":
        again.pop("sum_dp")
    assert_same(again, want)


def test_partial_scan_is_nan_where_not_reduced():
    spec = SPECS["bf_adf_com"]()
    frames = poisson_frames("uint16")
    red = Reducer(spec, SCAN)
    assert not red.filled.any() and red.count == 0
    empty = red.images()
    assert np.isnan(empty["bf"]).all() and np.isnan(empty["max_dp"]).all()
    assert not empty["sum_dp"].any()
    red.add(10, frames[10:13])
    filled = red.filled
    assert filled.sum() == 3 and filled.ravel()[10:13].all() and red.count == 3
    img = red.images()
    for name in ("bf", "adf", "com_y", "com_x"):
        assert np.isnan(img[name][~filled]).all() and np.isfinite(img[name][filled]).all()


def test_com_is_nan_where_the_frame_is_empty():
    spec = SPECS["bf_adf_com"]()
    frames = poisson_frames("uint16", n=4)
    frames[2] = 0
    red = Reducer(spec, (1, 4))
    red.add(0, frames)
    img = red.images()
    assert np.isnan(img["com_y"][0, 2]) and np.isnan(img["com_x"][0, 2])
    assert img["bf"][0, 2] == 0.0
    assert np.isfinite(img["com_y"][0, [0, 1, 3]]).all()


def test_bad_frames_are_refused_with_the_value_named():
    spec = SPECS["bf_adf_com"]()
    red = Reducer(spec, SCAN)
    good = poisson_frames("uint16", n=4)
    with pytest.raises(ValueError, match=r"shape \(4, 40, 48\); allowed: \(n, 48, 40\)"):
        red.add(0, good.transpose(0, 2, 1))
    with pytest.raises(ValueError, match=r"shape \(48, 40\)"):
        red.add(0, good[0])
    with pytest.raises(ValueError, match="dtype float64; allowed: uint8, uint16, uint32, float32"):
        red.add(0, good.astype(np.float64))
    with pytest.raises(ValueError, match="dtype int16"):
        red.add(0, good.astype(np.int16))
    with pytest.raises(ValueError, match=r"frames 33\.\.36 are outside the scan \(5, 7\)"):
        red.add(33, good)
    with pytest.raises(ValueError, match=r"frames -1\.\.2"):
        red.add(-1, good)
    with pytest.raises(ValueError, match="first must be an integer"):
        red.add(1.5, good)
    red.add(4, good)
    with pytest.raises(ValueError, match=r"position 6 .* already reduced"):
        red.add(6, good)
    assert red.count == 4  # the refused block left nothing behind
    with pytest.raises(ValueError, match=r"scan_shape \(0, 3\)"):
        Reducer(spec, (0, 3))


def test_combine_refuses_overlap_and_foreign_parts():
    spec = SPECS["bf_adf_com"]()
    frames = poisson_frames("uint16", n=8)
    a = Reducer(spec, SCAN).partial(0, frames)
    b = Reducer(spec, SCAN).partial(4, frames)
    with pytest.raises(ValueError, match="position 4 is in two parts"):
        Reducer.combine([a, b])
    other = ReductionSpec.default(FRAME)
    with pytest.raises(ValueError, match="spec"):
        Reducer.combine([a, Reducer(other, SCAN).partial(8, frames)])
    with pytest.raises(ValueError, match=r"scan shape \(1, 35\)"):
        Reducer.combine([a, Reducer(spec, (1, 35)).partial(8, frames)])


def test_sum_dp_stays_exact_past_the_uint32_part_limit_and_across_dtypes():
    # 70000 saturated uint16 frames: more than a uint32 part may hold before folding.
    spec = ReductionSpec((4, 4), detectors=(VirtualDetector("bf", "disk", {"radius": 1.0}),))
    red = Reducer(spec, (1, 70100))
    full = np.full((70000, 4, 4), 65535, np.uint16)
    red.add(0, full[:30000])
    red.images()  # reading folds the parts; adding on must not change a bit
    red.add(30000, full[30000:])
    red.add(70000, np.full((100, 4, 4), 7, np.uint8))  # another dtype: another part type
    img = red.images()
    assert np.array_equal(img["sum_dp"], np.full((4, 4), 70000 * 65535 + 700, np.float64))
    assert np.array_equal(img["max_dp"], np.full((4, 4), 65535.0))
    assert np.array_equal(img["bf"].ravel()[[0, 69999, 70099]], [5 * 65535.0] * 2 + [35.0])


def test_add_in_a_worker_thread_while_images_are_read():
    spec = SPECS["bf_adf_com"]()
    frames = poisson_frames("uint16")
    red = Reducer(spec, SCAN)

    def feed():
        for a in range(0, 35, 5):
            red.add(a, frames[a : a + 5])

    worker = threading.Thread(target=feed)
    worker.start()
    while worker.is_alive():
        img = red.images()
        done = ~np.isnan(img["bf"])
        assert np.isfinite(img["com_x"][done]).all()  # a position is all there or not at all
    worker.join()
    assert_same(red.images(), split_images(spec, frames, [35]))
