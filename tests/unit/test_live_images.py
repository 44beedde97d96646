"""LiveImages: throttled redraws, PNGs at stop named by the raw run with the start's
calibration and the derived run in their titles, the COM colour wheel, mask outlines."""

from __future__ import annotations

import colorsys
import math
import threading

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
from matplotlib.contour import ContourSet

from bluestem.callbacks.live_images import (
    ImageSource,
    LiveImages,
    com_to_rgba,
    save_image_pngs,
)

NY, NX, K = 8, 12, 32
UID = "0123456789abcdef-run"


def disk(radius, inner=0.0):
    yy, xx = np.mgrid[:K, :K] - (K - 1) / 2
    r = np.hypot(yy, xx)
    return ((r <= radius) & (r >= inner)).astype(np.float32)


class FakeSource:
    """A reducer double: each snapshot has one more scan row reduced."""

    def __init__(self, names=("bf", "adf", "com_x", "com_y", "idpc"), latest=True):
        self.names, self.with_latest = names, latest
        self.rows = 0
        self.calls = 0
        self.masks = {"bf": disk(4), "adf": disk(13, inner=7)}

    def snapshot(self):
        self.calls += 1
        self.rows = min(self.rows + 1, NY - 1)  # the last row is never reduced
        images = {}
        yy, xx = np.mgrid[:NY, :NX]
        full = {
            "bf": np.where(xx < NX // 2, 100.0, 5.0),  # bright left half
            "adf": xx.astype(float),
            "com_x": np.cos(xx / 3.0),
            "com_y": np.sin(yy / 2.0),
            "idpc": (xx + yy).astype(float),
        }
        for name in self.names:
            image = full[name].copy()
            image[self.rows :] = np.nan
            images[name] = image
        images["sum_dp"] = disk(10) * 50 + 1
        latest = disk(6) * 200.0 + 2 if self.with_latest else None
        frames = self.rows * NX
        return {"images": images, "latest": latest, "masks": self.masks, "uid": UID,
                "frames": frames, "total": NY * NX}  # fmt: skip


class Clock:
    def __init__(self):
        self.ticks = 0  # integer hundredths of a second: no float drift

    def __call__(self):
        return self.ticks / 100


def run_documents(live, clock, n_datums, step=1):
    live("start", {"uid": UID, "time": 0})
    live("descriptor", {"uid": "d1", "run_start": UID})
    for i in range(n_datums):
        clock.ticks += step
        live("stream_datum", {"descriptor": "d1", "indices": {"start": i, "stop": i + 1}})
    live("stop", {"run_start": UID, "exit_status": "success"})


def test_fake_source_is_an_image_source():
    assert isinstance(FakeSource(), ImageSource)


def test_redraws_are_throttled_by_the_clock(tmp_path):
    clock = Clock()
    live = LiveImages(FakeSource(), out_dir=tmp_path, clock=clock, min_interval=0.1)
    run_documents(live, clock, n_datums=40)  # 0.4 s of documents, 43 in all
    elapsed = clock()
    assert live.error is None
    # One draw per 0.1 s from the first document on, plus the stop document's.
    assert 1 + int(elapsed / 0.1) <= live.draws <= 2 + elapsed / 0.1
    unthrottled = LiveImages(FakeSource(), out_dir=tmp_path / "u", clock=clock, min_interval=0)
    run_documents(unthrottled, clock, n_datums=40)
    assert unthrottled.draws == 43


def test_pngs_at_stop_are_named_by_the_run(tmp_path):
    clock = Clock()
    live = LiveImages(FakeSource(), out_dir=tmp_path, clock=clock)
    before = plt.get_fignums()
    run_documents(live, clock, n_datums=20, step=5)
    assert live.error is None
    names = ["bf", "adf", "com", "idpc", "dp", "sum"]  # dp: the latest; sum: the sum pattern
    assert [p.name for p in live.saved] == [f"{n}-{UID[:8]}.png" for n in names] + [
        f"live-{UID[:8]}.png"
    ]
    for path in live.saved:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    panel = mpimg.imread(live.saved[0])
    assert panel.shape == (690, 840, 4)  # a 5.6 x 4.6 inch figure at 150 dpi
    whole = mpimg.imread(live.saved[-1])
    assert whole.ndim == 3 and whole.shape[0] > 100
    # Headless: the figure is dropped and pyplot never saw it.
    assert live.figure is None and plt.get_fignums() == before


class DerivingSource(FakeSource):
    """A LiveReduction double: its stop makes a derived run, as LiveReduction.stop does."""

    def __init__(self):
        super().__init__()
        self.derived_uid = "old-derived-run"

    def __call__(self, name, doc):
        if name == "stop" and doc.get("exit_status") == "success":
            self.derived_uid = "feedbeef-derived"


def capture_figures(monkeypatch) -> list[dict]:
    from bluestem.callbacks import image_panels

    made = []

    def recording(*args, **kwargs):
        made.append(figs := real(*args, **kwargs))
        return figs

    real = image_panels.panel_figures
    monkeypatch.setattr(image_panels, "panel_figures", recording)
    return made


def test_saved_pngs_name_both_runs_and_use_the_start_calibration(tmp_path, monkeypatch):
    made = capture_figures(monkeypatch)
    source = DerivingSource()
    live = LiveImages(source, out_dir=tmp_path, min_interval=0)
    start = {"uid": UID, "calibration": {"scan_step_nm": [0.05, 0.025],
             "angle_per_pixel_mrad": 0.4}, "reduction": {"centre": [15.0, 16.0]}}  # fmt: skip
    for name, doc in (("start", start), ("stop", {"run_start": UID, "exit_status": "success"})):
        source(name, doc)  # subscribed first, as in the session
        live(name, doc)
    assert live.error is None and live.calibration == start["calibration"]
    (figs,) = made
    assert list(figs) == ["bf", "adf", "com", "idpc", "dp", "sum"]
    for fig in figs.values():
        title = fig.axes[0].get_title()
        assert f"run {UID[:8]} (derived feedbeef)" in title, title
    bar = next(a for a in figs["bf"].axes[0].artists if a.get_gid() == "scale bar")
    nm = float(bar.txt_label.get_text().removesuffix(" nm"))
    assert bar.size_bar.get_children()[0].get_width() == pytest.approx(nm / 0.025)
    extent = figs["dp"].axes[0].images[0].get_extent()
    assert extent[0] == pytest.approx((-0.5 - 16.0) * 0.4)  # mrad from the start's centre

    # A run whose reduction made no derived run: the older uid is not named.
    made.clear()
    source("start", start)
    live("start", start)
    live("stop", {"run_start": UID, "exit_status": "fail"})
    (figs,) = made
    assert "derived" not in figs["bf"].axes[0].get_title()


def test_a_bad_calibration_still_saves_the_pngs_without_a_scale(tmp_path, monkeypatch, caplog):
    made = capture_figures(monkeypatch)
    live = LiveImages(FakeSource(), out_dir=tmp_path, min_interval=0)
    live("start", {"uid": UID, "calibration": {"scan_step_nm": [0, 1]}})
    live("stop", {"run_start": UID})
    assert live.error is None and len(live.saved) == 7
    assert "scan_step_nm=[0, 1]" in caplog.text
    bar = next(a for a in made[0]["bf"].axes[0].artists if a.get_gid() == "scale bar")
    assert "no nm calibration" in bar.txt_label.get_text()


def test_panels_for_absent_images_are_skipped(tmp_path):
    clock = Clock()
    live = LiveImages(FakeSource(names=("bf",), latest=False), out_dir=tmp_path, clock=clock)
    live("start", {"uid": UID})
    assert list(live.axes) == ["bf", "dp"]  # dp falls back to the summed pattern
    live("stop", {"run_start": UID})
    assert [p.name.split("-")[0] for p in live.saved] == ["bf", "dp", "live"]


def test_mask_outlines_one_contour_per_mask(tmp_path):
    clock = Clock()
    source = FakeSource()
    live = LiveImages(source, out_dir=tmp_path, clock=clock)
    live("start", {"uid": UID})
    ax = live.axes["dp"]
    contours = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert len(contours) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["bf", "adf"]
    centre = (K - 1) / 2
    radii = np.hypot(*(contours[0].allsegs[0][0] - centre).T)
    assert np.allclose(radii, 4, atol=0.8)  # the outline of the radius-4 disk
    clock.ticks += 50
    live("event", {})  # a redraw with the same masks does not stack outlines
    assert len([c for c in ax.collections if isinstance(c, ContourSet)]) == 2
    source.masks = {"only": disk(9)}
    clock.ticks += 50
    live("event", {})
    assert len([c for c in ax.collections if isinstance(c, ContourSet)]) == 1


def test_saved_dp_png_carries_the_outlines(tmp_path):
    snap = FakeSource().snapshot()
    plain = save_image_pngs(snap["images"], tmp_path / "a", "t", latest=snap["latest"])
    masks = {"bf": disk(4)}
    outlined = save_image_pngs(snap["images"], tmp_path / "b", "t", masks, snap["latest"])
    assert plain[-2].name == outlined[-2].name == "dp-t.png"
    dp_plain, dp_outlined = mpimg.imread(plain[-2]), mpimg.imread(outlined[-2])
    changed = np.abs(dp_plain - dp_outlined).max(axis=-1) > 0.1
    # Where the outline and the legend are drawn, and nowhere else: a small part.
    assert 50 < changed.sum() < 0.05 * changed.size


def test_com_colour_wheel_is_the_textbook_hsv():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    x[2, 3] = np.nan
    vmax = 1.5
    rgba = com_to_rgba(x, y, vmax=vmax)
    for (i, j), xv in np.ndenumerate(x):
        if math.isnan(xv):
            assert rgba[i, j, 3] == 0
            continue
        hue = (math.atan2(y[i, j], xv) / (2 * math.pi)) % 1.0
        value = min(math.hypot(xv, y[i, j]) / vmax, 1.0)
        np.testing.assert_allclose(
            rgba[i, j, :3], colorsys.hsv_to_rgb(hue, 1.0, value), atol=1e-12
        )
        assert rgba[i, j, 3] == 1
    # The four axis directions: red, chartreuse, cyan, violet; double length saturates.
    wheel = com_to_rgba([1, 0, -1, 0, 2], [0, 1, 0, -1, 0], vmax=1.0)[:, :3]
    expected = [(1, 0, 0), (0.5, 1, 0), (0, 1, 1), (0.5, 0, 1), (1, 0, 0)]
    np.testing.assert_allclose(wheel, expected, atol=1e-12)
    # Default vmax: the largest magnitude is at full brightness.
    assert com_to_rgba([0.5, 0.25], [0, 0])[:, :3].max(axis=1).tolist() == [1.0, 0.5]


def test_com_colour_wheel_bad_input():
    with pytest.raises(ValueError, match=r"com_x shape \(2,\) and com_y shape \(3,\) differ"):
        com_to_rgba([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="vmax=0 must be > 0"):
        com_to_rgba([1], [1], vmax=0)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="needs out_dir=DIR"):
        LiveImages(FakeSource(), headless=True)
    with pytest.raises(ValueError, match="needs out_dir=DIR"):
        LiveImages(FakeSource())  # Agg: headless by default
    with pytest.raises(ValueError, match=r"min_interval=-1 must be >= 0 s"):
        LiveImages(FakeSource(), out_dir=tmp_path, min_interval=-1)
    with pytest.raises(ValueError, match="com_offset='mean' must be 'median' or None"):
        LiveImages(FakeSource(), out_dir=tmp_path, com_offset="mean")
    with pytest.raises(TypeError, match="no snapshot"):
        LiveImages(object(), out_dir=tmp_path)
    images = FakeSource().snapshot()["images"]
    with pytest.raises(ValueError, match="tag='a/b' must be a non-empty file-name part"):
        save_image_pngs(images, tmp_path, "a/b")
    with pytest.raises(ValueError, match=r"dpi=0; allowed: 10 <= dpi <= 1200"):
        save_image_pngs(images, tmp_path, "t", dpi=0)


def test_a_failing_source_never_stops_the_run(tmp_path):
    class Broken:
        def snapshot(self):
            raise RuntimeError("reducer crashed")

    live = LiveImages(Broken(), out_dir=tmp_path)
    live("start", {"uid": UID})
    live("stop", {"run_start": UID})
    assert isinstance(live.error, RuntimeError) and live.saved == []


def test_interactive_mode_redraws_on_its_own_thread_only(tmp_path):
    clock = Clock()
    live = LiveImages(FakeSource(), headless=False, clock=clock)
    try:
        live("start", {"uid": UID})
        assert live.draws == 1 and live.figure is not None
        drawn = []
        thread = threading.Thread(target=lambda: drawn.append(live("stop", {})))
        clock.ticks += 50
        thread.start()
        thread.join()
        assert live.draws == 1  # another thread never touches the figure
        live("stop", {"run_start": UID})
        assert live.draws == 2 and live.saved == [] and live.figure is not None
        assert live.figure.get_suptitle() == f"run {UID[:8]}  24/96 frames (25%)"
    finally:
        plt.close(live.figure)
