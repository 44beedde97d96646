"""Adaptive survey pieces: features found where blobs were drawn, scan coordinates as the
twin's scan places them, drift shifts recovered to a fraction of a pixel, the agent's
offsets (origin + feature + extrapolated drift), and arguments refused before anything
moves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bluestem.loop.drift import bin_image, extrapolate, measure_shift, shift_to_scan
from bluestem.loop.features import find_features, pixel_to_scan, smooth
from bluestem.loop.survey import OFFSET_X, OFFSET_Y, SurveyAgent
from bluestem.plans import adaptive_survey


def _blobs(shape, centres, radius, height=500.0, background=20.0, seed=0):
    """Poisson counts of flat-topped discs (soft edge) on a flat background."""
    yy, xx = np.indices(shape, dtype=np.float64)
    mean = np.full(shape, background)
    for cy, cx in centres:
        r = np.hypot(yy - cy, xx - cx)
        mean += height / (1.0 + np.exp((r - radius) / 0.7))
    return np.random.default_rng(seed).poisson(mean).astype(np.float64)


def test_smooth_is_a_normalised_gaussian_convolution():
    image = np.zeros((21, 21))
    image[10, 10] = 1.0
    out = smooth(image, 1.5)
    t = np.arange(-10, 11)
    g = np.where(np.abs(t) <= 5, np.exp(-0.5 * (t / 1.5) ** 2), 0.0)  # cut at ceil(3 sigma)
    expected = np.outer(g, g) / np.outer(g, g).sum()
    np.testing.assert_allclose(out, expected, atol=1e-12)
    np.testing.assert_allclose(smooth(np.full((9, 9), 3.0), 2.0), 3.0)  # no dark edge


def test_features_are_found_at_the_blob_centres_heaviest_first():
    centres = [(12.3, 40.7), (30.0, 15.2), (45.6, 44.1)]
    radii = [5.0, 3.5, 4.2]
    image = sum(_blobs((60, 60), [c], r, background=0.0, seed=i)
                for i, (c, r) in enumerate(zip(centres, radii, strict=True)))  # fmt: skip
    image += np.random.default_rng(9).poisson(20.0, image.shape)
    found = find_features(image)
    assert len(found) == 3
    order = np.argsort(radii)[::-1]  # the biggest disc is the heaviest
    for f, k in zip(found, order, strict=True):
        assert math.hypot(f.y - centres[k][0], f.x - centres[k][1]) < 0.15
        assert f.radius == pytest.approx(radii[k], rel=0.25)
    assert [f.mass for f in found] == sorted((f.mass for f in found), reverse=True)


def test_a_blob_at_the_edge_is_left_out_and_touching_blobs_are_split():
    image = _blobs((40, 40), [(1.0, 20.0), (20.0, 14.0), (20.0, 23.0)], 3.5)
    found = find_features(image)
    assert len(found) == 2  # the one cut by the top edge is not measured
    xs = sorted(f.x for f in found)
    assert xs[0] == pytest.approx(14.0, abs=0.6) and xs[1] == pytest.approx(23.0, abs=0.6)
    whole = find_features(image, split=False)
    assert len(whole) == 1 and whole[0].x == pytest.approx(18.5, abs=0.6)
    assert len(find_features(image, edge=0)) == 3
    assert find_features(np.full((10, 10), 7.0)) == []


def test_a_blob_filling_most_of_the_field_is_found_above_a_given_background():
    # a fine scan centred on a particle: the median lies inside the disc
    image = _blobs((32, 32), [(16.4, 15.6)], 13.0, height=2000.0, background=2.0)
    assert np.median(image) > 1000
    assert find_features(image, edge=0, split=False) == []  # nothing above the median's noise
    found = find_features(image, background=float(np.percentile(image, 5)), edge=0, split=False)
    assert len(found) == 1
    assert math.hypot(found[0].y - 16.4, found[0].x - 15.6) < 0.1
    assert found[0].radius == pytest.approx(13.0, rel=0.1)


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"sigma": -1}, ["sigma=-1", "0..10"]),
        ({"threshold": 1.0}, ["threshold=1.0", "exclusive"]),
        ({"min_area": 0}, ["min_area=0", ">= 1"]),
        ({"edge": -1}, ["edge=-1"]),
        ({"split": "yes"}, ["split='yes'"]),
        ({"background": float("nan")}, ["background=nan", "finite"]),
    ],
)
def test_bad_feature_arguments_are_refused(kw, words):
    with pytest.raises(ValueError) as info:
        find_features(np.zeros((8, 8)), **kw)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(ValueError, match="2-D image"):
        find_features(np.zeros(8))


@pytest.mark.parametrize("rotation", [0.0, 0.3, -2.0])
def test_pixel_to_scan_is_where_the_scan_puts_the_position(rotation):
    from bluestem.twin import ScanGeometry

    geometry = ScanGeometry(shape=(6, 9), step=(0.7, 0.4), rotation=rotation)
    positions = geometry.positions()
    for iy, ix in [(0, 0), (5, 8), (2, 7), (3, 4)]:
        assert pixel_to_scan(iy, ix, (6, 9), (0.7, 0.4), rotation) == pytest.approx(
            tuple(positions[iy, ix]), abs=1e-12
        )
    # a shift of one pixel along x is the step along the scan's rotated x
    y0, x0 = pixel_to_scan(2, 3, (6, 9), (0.7, 0.4), rotation)
    y1, x1 = pixel_to_scan(2.5, 4, (6, 9), (0.7, 0.4), rotation)
    assert shift_to_scan(0.5, 1.0, (0.7, 0.4), rotation) == pytest.approx((y1 - y0, x1 - x0))


def _fourier_shifted(image, dy, dx):
    ny, nx = image.shape
    qy = np.fft.fftfreq(ny)[:, None]
    qx = np.fft.fftfreq(nx)[None, :]
    ramp = np.exp(-2j * np.pi * (qy * dy + qx * dx))
    return np.fft.ifft2(np.fft.fft2(image) * ramp).real


@pytest.mark.parametrize("shift", [(0.0, 0.0), (1.3, -2.6), (-4.45, 0.35)])
def test_measure_shift_recovers_a_known_shift(shift):
    # smooth random texture with particles: periodic, so a Fourier shift is exact
    base = _blobs((48, 48), [(10, 12), (30, 35), (24, 8), (40, 20)], 3.0, seed=3)
    base = smooth(base, 1.0)
    moved = _fourier_shifted(base, *shift)
    noisy = moved + np.random.default_rng(1).normal(0, 2.0, moved.shape)
    got, peak = measure_shift(base, noisy)
    assert got == pytest.approx(shift, abs=0.06)
    assert peak > 0.9
    with pytest.raises(ValueError, match="one shape"):
        measure_shift(base, base[:-1])
    bad = base.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        measure_shift(base, bad)


def test_bin_image_is_the_block_mean():
    a = np.arange(48.0).reshape(6, 8)
    expected = np.array([[a[i:i + 2, j:j + 2].mean() for j in range(0, 8, 2)]
                         for i in range(0, 6, 2)])  # fmt: skip
    np.testing.assert_array_equal(bin_image(a, 2), expected)
    with pytest.raises(ValueError, match="factor=3"):
        bin_image(a, 3)


def test_extrapolate_a_constant_velocity():
    times = [10.0, 12.0, 15.0]
    drifts = [(0.0, 0.0), (0.4, -0.2), (1.0, -0.5)]  # 0.2, -0.1 nm/s
    assert extrapolate(times, drifts, 20.0) == pytest.approx((2.0, -1.0))
    assert extrapolate(times[:1], drifts[:1], 99.0) == (0.0, 0.0)
    assert extrapolate([], [], 5.0) == (0.0, 0.0)
    # only the last ``window`` points: an old outlier is forgotten
    assert extrapolate([0.0, *times], [(9.0, 9.0), *drifts], 20.0,
                       window=3) == pytest.approx((2.0, -1.0))  # fmt: skip


def _survey(features, t=100.0):
    return {"role": "survey", "time": t, "ready": t + 1,
            "features": [{"y_nm": y, "x_nm": x} for y, x in features]}  # fmt: skip


def test_the_agent_centres_each_fine_scan_on_origin_plus_feature_plus_drift():
    v = (0.2, -0.1)  # nm/s
    agent = SurveyAgent(features=2, track=True, lag=0.5)
    assert agent.suggest(1) == [{}]  # the survey where the scan is
    origin = {OFFSET_Y: 1.0, OFFSET_X: -2.0}
    agent.ingest(origin, _survey([(3.0, 4.0), (-5.0, 6.0), (7.0, 7.0)]))
    assert agent.report()["targets"] == 2 and agent.report()["features_found"] == 3
    t, ready = 100.0, 102.0
    for k, (gy, gx) in enumerate([(3.0, 4.0), (-5.0, 6.0)]):
        assert agent.suggest(1) == [origin]  # back to the survey's field to track
        t += 3.0
        ready = t + 0.8
        agent.ingest(origin, {"role": "track", "time": t, "ready": ready, "reliable": True,
                              "drift_nm": [v[0] * (t - 100), v[1] * (t - 100)]})  # fmt: skip
        (point,) = agent.suggest(1)
        lag = 0.5 if k == 0 else 0.3
        at = ready + lag - 100.0
        assert point[OFFSET_Y] == pytest.approx(1.0 + gy + v[0] * at, abs=1e-3)
        assert point[OFFSET_X] == pytest.approx(-2.0 + gx + v[1] * at, abs=1e-3)
        agent.ingest(point, {"role": "fine", "time": ready + 0.3, "ready": ready + 1})
    assert agent.report()["done"] and agent.report()["visited"] == 2
    assert agent.suggest(1) == [{}]


def test_without_tracking_the_fine_scans_go_where_the_survey_saw_the_features():
    agent = SurveyAgent(features=3, track=False)
    origin = {OFFSET_Y: 0.0, OFFSET_X: 0.0}
    agent.ingest(origin, _survey([(3.0, 4.0)]))
    assert agent.suggest(1) == [{OFFSET_Y: 3.0, OFFSET_X: 4.0}]
    agent.ingest({OFFSET_Y: 3.0, OFFSET_X: 4.0}, {"role": "fine", "time": 105.0})
    assert agent.report()["done"] and agent.report()["targets"] == 1


def test_an_unreliable_drift_measurement_is_not_used():
    agent = SurveyAgent(features=1)
    origin = {OFFSET_Y: 0.0, OFFSET_X: 0.0}
    agent.ingest(origin, _survey([(1.0, 1.0)]))
    agent.ingest(origin, {"role": "track", "time": 110.0, "ready": 111.0, "reliable": False,
                          "drift_nm": [50.0, 50.0]})  # fmt: skip
    assert agent.suggest(1) == [{OFFSET_Y: 1.0, OFFSET_X: 1.0}]


def test_no_features_ends_the_survey_and_a_wrong_role_is_refused():
    agent = SurveyAgent(features=2)
    with pytest.raises(ValueError, match="role 'fine'"):
        agent.ingest({}, {"role": "fine"})
    agent.ingest({OFFSET_Y: 0.0, OFFSET_X: 0.0}, _survey([]))
    report = agent.report()
    assert report["done"] and report["decision"] == "no features found"
    for kw, word in (({"features": 0}, "features=0"), ({"track": 1}, "track=1"),
                     ({"lag": -1.0}, "lag=-1.0"), ({"window": 1}, "window=1")):  # fmt: skip
        with pytest.raises(ValueError, match=word):
            SurveyAgent(**kw)


class _Device:
    def __init__(self, *attrs):
        for a in attrs:
            setattr(self, a, object())


DET = _Device("hdf", "cam")
SCAN = _Device("geometry", "offset_y", "offset_x")
MIC = _Device("defocus")


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"survey_shape": (4, 48)}, ["survey_shape=(4, 48)", "8..1024"]),
        ({"fine_shape": (2, 2)}, ["fine_shape=(2, 2)", "4..1024"]),
        ({"survey_fov": 0.5}, ["survey_fov=0.5", "[1, 10000]"]),
        ({"fine_fov": 50.0}, ["fine_fov=50.0", "[0.1, 36]"]),
        ({"fine_dwell": 0}, ["fine_dwell=0", "(0, 1]"]),
        ({"features": 0}, ["features=0", "1..50"]),
        ({"features": 2.0}, ["features=2.0"]),
        ({"track": "yes"}, ["track='yes'"]),
        ({"track_binning": 3}, ["track_binning=3", "(1, 2, 4, 8)"]),
        ({"survey_shape": (36, 36), "track_binning": 8}, ["track_binning=8", "(36, 36)"]),
        ({"contrast": "haadf"}, ["contrast='haadf'", "('adf', 'bf')"]),
        ({"recentre": 0.7}, ["recentre=0.7", "(0, 0.5]"]),
        ({"frame_budget": 3000}, ["frame_budget=3000", "2304 frames", "allowed >= 3904"]),
        ({"md": ["x"]}, ["md=['x']"]),
    ],
)
def test_bad_survey_arguments_are_refused_before_any_message(kw, words):
    with pytest.raises(ValueError) as info:
        next(adaptive_survey(DET, SCAN, MIC, **kw))
    for word in words:
        assert word in str(info.value)


def test_a_scan_without_offsets_is_refused():
    with pytest.raises(ValueError, match="missing \\['offset_y', 'offset_x'\\]"):
        next(adaptive_survey(DET, _Device("geometry"), MIC))


def test_the_frame_budget_limits_the_fine_scans_and_is_recorded():
    class Settable:
        name = "offset"

        def set(self, value):  # pragma: no cover (no message is run)
            raise AssertionError

        def read(self):  # pragma: no cover
            raise AssertionError

    scan = _Device("geometry")
    scan.offset_y, scan.offset_x = Settable(), Settable()
    msg = next(adaptive_survey(DET, scan, MIC, features=5, frame_budget=2304 + 2 * 1600 + 99))
    assert msg.command == "open_run"
    recorded = msg.kwargs["adaptive_survey"]
    assert recorded["features"] == 5 and recorded["features_in_budget"] == 2
    assert msg.kwargs["closed_loop"]["budget"] == {"max_iterations": 5}  # survey + 2 × 2
    assert msg.kwargs["closed_loop"]["agent"]["parameters"]["features"] == 2
    # no frames left for a re-centred fine scan (1,024 each): none allowed
    assert recorded["recentres_in_budget"] == 0
    msg = next(adaptive_survey(DET, scan, MIC, features=2, frame_budget=2304 + 2 * 1600 + 1024))
    assert msg.kwargs["adaptive_survey"]["recentres_in_budget"] == 1
    assert msg.kwargs["closed_loop"]["budget"] == {"max_iterations": 6}
    assert msg.kwargs["closed_loop"]["agent"]["parameters"]["recentre_nm"] == 0.4  # 5 % of 8


def _fine(t: float, cy: float, cx: float) -> dict:
    """A fine scan's measurement: started at ``t``, its feature at (cy, cx) nm."""
    return {"role": "fine", "time": t, "ready": t + 0.5, "found": True,
            "centring_nm": [cy, cx], "centring_error_nm": math.hypot(cy, cx)}  # fmt: skip


def test_a_fine_scan_found_off_centre_is_taken_once_more_centred_on_its_feature():
    v = (0.2, -0.1)  # nm/s
    agent = SurveyAgent(features=2, track=True, lag=0.5, recentre_nm=0.4, recentres=1)
    origin = {OFFSET_Y: 0.0, OFFSET_X: 0.0}
    agent.ingest(origin, _survey([(3.0, 4.0), (-5.0, 6.0)]))
    agent.ingest(origin, {"role": "track", "time": 110.0, "ready": 111.0, "reliable": True,
                          "drift_nm": [v[0] * 10, v[1] * 10]})  # fmt: skip
    (first,) = agent.suggest(1)
    # the fine image shows the feature 0.6 nm off (more than 0.4): the same feature again
    agent.ingest(first, _fine(111.5, 0.6, 0.0))
    report = agent.report()
    assert report["visited"] == 0 and report["recentred"] == 1 and report["next"] == "fine"
    assert "again" in report["decision"]
    (again,) = agent.suggest(1)
    # the offset plus the centring plus the drift from the fine scan to the next (lag 0.5)
    dt = (112.0 + 0.5) - 111.5
    assert again[OFFSET_Y] == pytest.approx(first[OFFSET_Y] + 0.6 + v[0] * dt, abs=1e-3)
    assert again[OFFSET_X] == pytest.approx(first[OFFSET_X] + 0.0 + v[1] * dt, abs=1e-3)
    agent.ingest(again, _fine(112.6, 0.5, 0.0))
    # once only per feature: on to the next feature although still 0.5 nm off
    assert agent.report()["visited"] == 1 and agent.report()["next"] == "track"
    agent.ingest(origin, {"role": "track", "time": 114.0, "ready": 115.0, "reliable": True,
                          "drift_nm": [v[0] * 14, v[1] * 14]})  # fmt: skip
    (point,) = agent.suggest(1)
    # the budget held one re-centring: spent, so an off-centre scan is not taken again
    agent.ingest(point, _fine(115.5, 0.0, 2.0))
    report = agent.report()
    assert report["done"] and report["recentred"] == 1
    assert report["scans"] == ["survey", "track", "fine", "fine again", "track", "fine"]


def test_a_fine_scan_that_found_nothing_or_is_centred_is_not_repeated():
    for measured in ({"found": False}, {"found": True, "centring_nm": [0.1, 0.1],
                                        "centring_error_nm": 0.14}):  # fmt: skip
        agent = SurveyAgent(features=1, track=False, recentre_nm=0.4, recentres=1)
        agent.ingest({OFFSET_Y: 0.0, OFFSET_X: 0.0}, _survey([(3.0, 4.0)]))
        agent.ingest(agent.suggest(1)[0], {"role": "fine", "time": 105.0, **measured})
        assert agent.report()["done"] and agent.report()["recentred"] == 0
    for kw, word in (({"recentre_nm": 0.0}, "recentre_nm=0.0"),
                     ({"recentres": -1}, "recentres=-1")):  # fmt: skip
        with pytest.raises(ValueError, match=word):
            SurveyAgent(**kw)


def test_a_drift_measurement_off_the_line_through_the_earlier_ones_is_not_used():
    agent = SurveyAgent(features=2, track=True, lag=0.0)
    origin = {OFFSET_Y: 0.0, OFFSET_X: 0.0}
    agent.ingest(origin, _survey([(1.0, 1.0), (2.0, 2.0)]))
    agent.ingest(origin, {"role": "track", "time": 110.0, "ready": 110.0, "reliable": True,
                          "drift_nm": [2.0, -1.0]})  # fmt: skip
    agent.ingest(agent.suggest(1)[0], {"role": "fine", "time": 110.0, "ready": 110.0})
    # a wrong period of the specimen: 30 nm from the line (0.2, -0.1) nm/s predicts
    agent.ingest(origin, {"role": "track", "time": 120.0, "ready": 120.0, "reliable": True,
                          "drift_nm": [-27.0, 10.0]})  # fmt: skip
    (point,) = agent.suggest(1)
    assert point[OFFSET_Y] == pytest.approx(2.0 + 4.0, abs=1e-3)  # the line, at t = 120 s
    assert point[OFFSET_X] == pytest.approx(2.0 - 2.0, abs=1e-3)
