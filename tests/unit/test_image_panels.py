"""image_panels: every saved image has a title, a colour key with its unit and a scale.

The scale bar, the mrad axes and the COM key are checked against values computed here
from the calibration, not read back from the module.
"""

from __future__ import annotations

import colorsys
import math
import re

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.image as mpimg
from matplotlib.contour import ContourSet

from bluestem.callbacks.image_panels import com_to_rgba, panel_figures
from bluestem.callbacks.live_images import save_image_pngs

NY, NX, K = 24, 32, 40
RAW = "1a2b3c4d-raw-run-uid"
DERIVED = "5e6f7a8b-derived-run-uid"
DY, DX = 0.05, 0.04  # nm per scan step: not square, so the bar must use dx
MRAD = 0.37  # mrad per detector pixel
CALIBRATION = {"scan_step_nm": [DY, DX], "angle_per_pixel_mrad": MRAD, "scan_rotation_deg": 0}
CENTRE = (19.0, 21.0)  # off the frame's middle, so the axes must use it
SCAN_PANELS = ["bf", "adf", "left", "com", "idpc", "ddpc"]
NAMES = {"bf": "bright field", "adf": "annular dark field", "left": "virtual detector 'left'",
         "com": "centre of mass", "idpc": "iDPC", "ddpc": "dDPC",
         "dp": "diffraction pattern", "sum": "summed diffraction pattern"}  # fmt: skip


def disk(radius, inner=-1.0):
    yy, xx = np.mgrid[:K, :K]
    r = np.hypot(yy - CENTRE[0], xx - CENTRE[1])
    return ((r <= radius) & (r > inner)).astype(np.float32)


def snapshot():
    yy, xx = np.mgrid[:NY, :NX]
    rng = np.random.default_rng(3)
    images = {
        "bf": 1000 + 100 * np.cos(xx / 2.0),
        "adf": 40 + 5 * np.sin(yy / 3.0),
        "left": 0.5 * (500 + xx),
        "com_x": 0.3 * np.cos(xx / 3.0) + 0.02 * rng.normal(size=(NY, NX)),
        "com_y": 0.2 * np.sin(yy / 2.0),
        "idpc": (xx - yy) * 0.01,
        "ddpc": np.cos(xx + yy),
        "sum_dp": disk(8) * 5e4 + 10,
        "max_dp": disk(8) * 90 + 1,
    }
    for name in ("bf", "com_x", "com_y"):
        images[name][-2:, -3:] = np.nan  # not received
    masks = {"bf": disk(4), "adf": disk(15, inner=9), "left": disk(30) * 0.5}
    latest = disk(6) * 300.0 + 2
    return images, masks, latest


def figures(calibration=CALIBRATION, **kw):
    images, masks, latest = snapshot()
    return panel_figures(images, masks=masks, latest=latest, calibration=calibration,
                         centre=CENTRE, run_uid=RAW, derived_uid=DERIVED, **kw)  # fmt: skip


def main_axes(fig):
    return fig.axes[0]


def colour_bar_label(fig) -> str:
    (image,) = main_axes(fig).images
    assert image.colorbar is not None
    return image.colorbar.ax.get_ylabel()


def scale_bar(ax):
    (bar,) = [a for a in ax.artists if a.get_gid() == "scale bar"]
    (rect,) = bar.size_bar.get_children()
    return bar.txt_label.get_text(), rect.get_width()


def test_panels_in_order_each_titled_with_both_runs():
    figs = figures()
    assert list(figs) == [*SCAN_PANELS, "dp", "sum"]
    for panel, fig in figs.items():
        title = main_axes(fig).get_title()
        assert NAMES[panel] in title, (panel, title)
        assert f"run {RAW[:8]}" in title and f"derived {DERIVED[:8]}" in title, title
        assert RAW[8:] not in title  # eight characters, as in the file names


def test_colour_bars_carry_the_units():
    figs = figures()
    labels = {p: colour_bar_label(f) for p, f in figs.items() if p != "com"}
    assert labels["bf"].startswith("counts") and "BF disk" in labels["bf"]
    assert labels["adf"].startswith("counts") and "ADF annulus" in labels["adf"]
    assert "counts × weight" in labels["left"] and "'left'" in labels["left"]
    # iDPC integrates the COM in detector px over the scan step in nm (reduce/dpc.py).
    assert "px · nm" in labels["idpc"]
    assert "px / nm" in labels["ddpc"]
    assert labels["dp"] == "log(1 + counts)"
    assert labels["sum"].startswith("log(1 + counts")
    # The colour range is the data's (NaN left out).
    images = snapshot()[0]
    (bf,) = main_axes(figs["bf"]).images
    assert bf.get_clim() == (np.nanmin(images["bf"]), np.nanmax(images["bf"]))


@pytest.mark.parametrize("panel", SCAN_PANELS)
def test_scan_panels_have_a_scale_bar_in_nm(panel):
    ax = main_axes(figures()[panel])
    label, length_px = scale_bar(ax)
    match = re.fullmatch(r"([0-9.]+) nm", label)
    assert match, label
    label_nm = float(match.group(1))
    assert length_px == pytest.approx(label_nm / DX, rel=1e-12)  # along x: dx per step
    fraction = label_nm / (NX * DX)
    assert 0.08 <= fraction <= 0.2  # a readable bar, about a fifth of the field
    mantissa = label_nm / 10 ** math.floor(math.log10(label_nm))
    assert round(mantissa, 9) in (1, 2, 5)
    assert ax.get_aspect() == pytest.approx(DY / DX)  # a step is dy tall and dx wide


def test_the_pattern_axes_are_in_mrad_from_the_centre():
    figs = figures()
    for panel in ("dp", "sum"):
        ax = main_axes(figs[panel])
        (image,) = ax.images
        cy, cx = CENTRE
        # Pixel edges (index -/+ 0.5) in mrad = (index - centre) x mrad per pixel.
        expected = ((-0.5 - cx) * MRAD, (K - 0.5 - cx) * MRAD,
                    (K - 0.5 - cy) * MRAD, (-0.5 - cy) * MRAD)  # fmt: skip
        np.testing.assert_allclose(image.get_extent(), expected, rtol=1e-12)
        assert "mrad" in ax.get_xlabel() and "mrad" in ax.get_ylabel()
    # The bf mask (radius 4 px about the centre) is outlined at 4 px x MRAD.
    ax = main_axes(figs["dp"])
    contours = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert len(contours) == 3  # bf, adf, left (weights 0.5: its 0.5 level is its edge)
    radii = np.hypot(*contours[0].allsegs[0][0].T)
    np.testing.assert_allclose(radii, 4 * MRAD, atol=0.8 * MRAD)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["bf", "adf", "left"]
    # The log scale: log(1 + counts) of the latest frame.
    latest = snapshot()[2]
    np.testing.assert_allclose(ax.images[0].get_array(), np.log1p(latest))


def test_the_com_panel_is_keyed_by_its_colour_wheel():
    images = snapshot()[0]
    fig = figures()["com"]
    ax = main_axes(fig)
    (wheel_ax,) = [a for a in fig.axes if a.get_label() == "colour wheel"]
    (wheel,) = wheel_ax.images
    rgba = np.asarray(wheel.get_array())
    left, right, bottom, top = wheel.get_extent()
    rows, cols = rgba.shape[:2]

    def key_colour(x, y):  # the wheel pixel whose centre is nearest (x, y)
        col = round((x - left) / (right - left) * cols - 0.5)
        row = round((y - top) / (bottom - top) * rows - 0.5)
        return rgba[row, col]

    for angle in (0.0, 90.0, 180.0, 270.0, 45.0):
        x, y = 0.9 * math.cos(math.radians(angle)), 0.9 * math.sin(math.radians(angle))
        colour = key_colour(x, y)
        hue = (math.atan2(y, x) / (2 * math.pi)) % 1.0
        # Hue from the direction (y down, as in the image), value from the radius.
        expected = colorsys.hsv_to_rgb(hue, 1.0, math.hypot(x, y))
        np.testing.assert_allclose(colour[:3], expected, atol=0.02)
        np.testing.assert_allclose(colour[:3], com_to_rgba([x], [y], vmax=1.0)[0, :3],
                                   atol=0.02)  # fmt: skip
    assert tuple(key_colour(0.9, 0.0)[:3]) == pytest.approx((0.9, 0, 0), abs=0.02)  # red
    assert key_colour(0.75, 0.75)[3] == 0  # outside the unit circle: transparent

    # The image uses the same map, relative to the median, full at the 99th percentile.
    x = images["com_x"] - np.nanmedian(images["com_x"])
    y = images["com_y"] - np.nanmedian(images["com_y"])
    vmax = np.nanpercentile(np.hypot(x, y), 99)
    (image,) = ax.images
    np.testing.assert_allclose(image.get_array(), com_to_rgba(x, y, vmax=vmax), atol=1e-12)
    key_text = wheel_ax.get_xlabel()
    assert f"full from {vmax * MRAD:.3g} mrad" in key_text and "median" in key_text
    assert "direction" in wheel_ax.get_title()


def test_files_are_named_by_the_raw_run(tmp_path):
    images, masks, latest = snapshot()
    saved = save_image_pngs(images, tmp_path, RAW[:8], masks, latest, calibration=CALIBRATION,
                            centre=CENTRE, run_uid=RAW, derived_uid=DERIVED)  # fmt: skip
    assert [p.name for p in saved] == [f"{p}-{RAW[:8]}.png" for p in [*SCAN_PANELS, "dp", "sum"]]
    for path in saved:
        png = mpimg.imread(path)
        assert png.shape[:2] == (690, 840)  # 5.6 x 4.6 inches at 150 dpi
        assert png[..., 3].min() == 1  # a white page, not a transparent one
    assert save_image_pngs(images, tmp_path / "lo", "t", dpi=50)[0].exists()


def test_without_calibration_there_are_titles_keys_and_a_scale_in_scan_steps():
    images, masks, latest = snapshot()
    figs = panel_figures(images, masks=masks, latest=latest, run_uid=RAW)
    for panel, fig in figs.items():
        ax = main_axes(fig)
        assert NAMES[panel] in ax.get_title() and RAW[:8] in ax.get_title()
        assert "derived" not in ax.get_title()
        if panel != "com":
            assert colour_bar_label(fig)
        if panel in SCAN_PANELS:
            label, length_px = scale_bar(ax)
            match = re.match(r"([0-9.]+) px \(scan steps\)", label)
            assert match and "no nm calibration" in label, label
            assert length_px == float(match.group(1))
            assert ax.get_aspect() == 1.0
    assert "px · scan step" in colour_bar_label(figs["idpc"])
    (wheel_ax,) = [a for a in figs["com"].axes if a.get_label() == "colour wheel"]
    assert " px" in wheel_ax.get_xlabel() and "no mrad calibration" in wheel_ax.get_xlabel()
    dp = main_axes(figs["dp"])
    assert "px" in dp.get_xlabel() and "mrad" not in dp.get_xlabel()
    # Default centre: (ky // 2, kx // 2), where an fftshift-centred pattern has zero.
    assert dp.images[0].get_extent()[0] == -0.5 - K // 2


def test_the_summed_pattern_stands_in_when_there_is_no_latest_frame():
    images, masks, _ = snapshot()
    figs = panel_figures(images, masks=masks, calibration=CALIBRATION)
    assert "sum" not in figs
    assert "summed" in main_axes(figs["dp"]).get_title()
    assert colour_bar_label(figs["dp"]).startswith("log(1 + counts")


def test_a_series_is_stretched_not_drawn_as_a_line():
    fig = panel_figures({"bf": np.arange(200.0)[np.newaxis]}, calibration=CALIBRATION)["bf"]
    assert main_axes(fig).get_aspect() == "auto"
    label, length_px = scale_bar(main_axes(fig))
    assert length_px == pytest.approx(float(label.split()[0]) / DX)


@pytest.mark.parametrize(
    ("calibration", "words"),
    [
        ({"scan_step_nm": [0, 0.1]}, r"scan_step_nm=\[0, 0.1\]; allowed: .*> 0"),
        ({"scan_step_nm": [-0.1, 0.1]}, r"scan_step_nm=\[-0.1, 0.1\]"),
        ({"scan_step_nm": [0.1]}, r"scan_step_nm=\[0.1\]; allowed: \[dy, dx\]"),
        ({"scan_step_nm": [float("nan"), 0.1]}, r"scan_step_nm=\[nan, 0.1\]"),
        ({"angle_per_pixel_mrad": 0.0}, r"angle_per_pixel_mrad=0.0; allowed: .*> 0"),
        ({"angle_per_pixel_mrad": "1"}, r"angle_per_pixel_mrad='1'"),
        ([1, 2], r"calibration=\[1, 2\]; allowed: a mapping or None"),
    ],
)
def test_a_bad_calibration_is_named(calibration, words):
    images, masks, latest = snapshot()
    with pytest.raises(ValueError, match=words):
        panel_figures(images, masks=masks, latest=latest, calibration=calibration)


def test_bad_shapes_are_named():
    images, _, latest = snapshot()
    with pytest.raises(ValueError, match=r"image 'bf' has shape \(2, 3, 4\); allowed: 2-D"):
        panel_figures({**images, "bf": np.zeros((2, 3, 4))})
    with pytest.raises(ValueError, match=r"allowed: one \(ny, nx\) for all"):
        panel_figures({**images, "com_y": np.zeros((NY, NX + 1))})
    with pytest.raises(ValueError, match=r"mask 'bf' has shape \(8, 8\); allowed: the pattern "
                       rf"shape \({K}, {K}\)"):  # fmt: skip
        panel_figures(images, masks={"bf": np.ones((8, 8))}, latest=latest)
    with pytest.raises(ValueError, match=r"pattern shape \(40,\); allowed: 2-D"):
        panel_figures(images, latest=latest[0])
    with pytest.raises(ValueError, match=r"centre=\(1, 2, 3\); allowed: \(cy, cx\)"):
        panel_figures(images, centre=(1, 2, 3))
    with pytest.raises(ValueError, match="com_offset='mean' must be 'median' or None"):
        panel_figures(images, com_offset="mean")
    with pytest.raises(ValueError, match=r"dpi=0; allowed: 10 <= dpi <= 1200"):
        save_image_pngs(images, "unused", "t", dpi=0)
