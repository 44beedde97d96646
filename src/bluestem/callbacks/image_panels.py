"""Images a microscopist can read: one :class:`matplotlib.figure.Figure` per panel.

Every panel has a title (what it is, which raw run, which derived run), a colour key with
its unit, and, on scan images, a scale bar in nm (in scan steps, said so, without a
calibration). Diffraction patterns have their axes in mrad from the pattern centre. The
centre-of-mass image is keyed by a colour wheel (hue = direction, brightness = magnitude)
stating the magnitude at full brightness. Figures are made without pyplot (Agg), so
nothing is registered globally; :func:`panel_figures` builds them, and
:func:`bluestem.callbacks.live_images.save_image_pngs` writes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np

__all__ = [
    "COM_PERCENTILE",
    "NAMES",
    "UNITS",
    "colour_bar",
    "com_to_rgba",
    "outline_masks",
    "panel_figures",
    "scale_bar",
    "scale_from_calibration",
    "usable_calibration",
]

NAMES = {"bf": "bright field", "adf": "annular dark field", "com": "centre of mass",
         "idpc": "integrated DPC (iDPC)", "ddpc": "differentiated DPC (dDPC)",
         "dp": "diffraction pattern (latest frame)",
         "sum": "summed diffraction pattern"}  # fmt: skip
# Colour-key labels; {d} is the scan-step unit ("nm", or "scan step" uncalibrated).
UNITS = {"bf": "counts (summed over the BF disk)",
         "adf": "counts (summed over the ADF annulus)",
         "detector": "counts × weight (summed over mask '{name}')",
         # idpc integrates the COM (detector px, not rotated to mrad) over the scan step.
         "idpc": "∫ COM · ds  (px · {d}; ∝ projected phase)",
         "ddpc": "∇ · COM  (px / {d}; ∝ ∇²phase)",
         "dp": "log(1 + counts)", "sum": "log(1 + counts summed over the scan)"}  # fmt: skip
COM_PERCENTILE = 99.0  # full brightness: outliers (a hot pixel) must not darken the rest
# Off inferno's black-purple-orange-yellow, each outline edged in black (see outline_masks).
MASK_COLOURS = ("cyan", "lime", "white", "deepskyblue", "magenta", "springgreen")
_FIGSIZE = (5.6, 4.6)  # inches; at the default 150 dpi a PNG of about 840 x 690


def com_to_rgba(com_x, com_y, vmax: float | None = None) -> np.ndarray:
    """Colour-wheel image of a vector field: hue = direction, value = magnitude.

    Parameters
    ----------
    com_x, com_y : array_like
        Vector components (same shape); x along columns, y along rows (downwards on
        screen, as the image is drawn).
    vmax : float, optional
        Magnitude shown at full brightness (default: the largest finite magnitude).

    Returns
    -------
    numpy.ndarray
        ``(*shape, 4)`` RGBA in [0, 1]: hue ``atan2(y, x) / 2π mod 1``, saturation 1,
        value ``clip(|v| / vmax, 0, 1)``; alpha 0 where either component is NaN.
    """
    from matplotlib.colors import hsv_to_rgb

    x, y = np.asarray(com_x, dtype=np.float64), np.asarray(com_y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"com_x shape {x.shape} and com_y shape {y.shape} differ")
    if vmax is not None and not vmax > 0:
        raise ValueError(f"vmax={vmax} must be > 0")
    valid = np.isfinite(x) & np.isfinite(y)
    x, y = np.where(valid, x, 0.0), np.where(valid, y, 0.0)
    mag = np.hypot(x, y)
    top = float(mag.max(initial=0.0)) if vmax is None else float(vmax)
    value = np.clip(mag / top, 0.0, 1.0) if top > 0 else mag
    hsv = np.stack([np.mod(np.arctan2(y, x) / (2 * np.pi), 1.0), np.ones_like(x), value], -1)
    return np.concatenate([hsv_to_rgb(hsv), valid[..., np.newaxis]], axis=-1)


def scale_from_calibration(calibration: Mapping | None):
    """``(step_nm, mrad_per_px)`` from a start document's ``calibration``, checked.

    Returns
    -------
    step_nm : (dy, dx) or None
        nm per scan step (``scan_step_nm``), None when absent.
    mrad_per_px : float or None
        mrad per detector pixel (``angle_per_pixel_mrad``), None when absent.
    """
    cal = {} if calibration is None else calibration
    if not isinstance(cal, Mapping):
        raise ValueError(f"calibration={calibration!r}; allowed: a mapping or None")
    step = cal.get("scan_step_nm")
    if step is not None:
        if not (_is_pair(step) and all(s > 0 for s in step)):
            raise ValueError(f"calibration scan_step_nm={step!r}; allowed: [dy, dx], two "
                             "finite nm per scan step > 0")  # fmt: skip
        step = (float(step[0]), float(step[1]))
    angle = cal.get("angle_per_pixel_mrad")
    if angle is not None:
        if not (_is_real(angle) and angle > 0):
            raise ValueError(f"calibration angle_per_pixel_mrad={angle!r}; allowed: a "
                             "finite mrad per detector pixel > 0")  # fmt: skip
        angle = float(angle)
    return step, angle


def usable_calibration(calibration) -> tuple[Mapping | None, str | None]:
    """``(calibration, None)`` when it can scale the images, else ``(None, why)``: the
    images are then drawn in pixels and scan steps, and the caller says why."""
    try:
        scale_from_calibration(calibration)
    except ValueError as exc:
        return None, str(exc)
    return calibration, None


def _is_real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_pair(value) -> bool:
    return (isinstance(value, Sequence | np.ndarray) and not isinstance(value, str)
            and len(value) == 2 and all(_is_real(v) for v in value))  # fmt: skip


def _nice(target: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above ``target``."""
    k = math.floor(math.log10(target))
    return next(m * 10.0**k for m in (5, 2, 1) if m * 10.0**k <= target * (1 + 1e-12))


def scale_bar(ax, width_px: int, height_px: int, dx_nm: float | None) -> None:
    """A scale bar of about a fifth of the field (1, 2 or 5 x 10^k nm) at the lower left of
    a scan image ``width_px`` wide; in scan steps, said so, when ``dx_nm`` is None."""
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    per_px = dx_nm or 1.0
    length = _nice(0.2 * width_px * per_px)  # about a fifth of the field
    label = f"{length:g} nm" if dx_nm else f"{length:g} px (scan steps)\nno nm calibration"
    bar = AnchoredSizeBar(ax.transData, length / per_px, label, "lower left", pad=0.3,
                          borderpad=0.6, sep=3, frameon=True, color="black",
                          size_vertical=height_px / 70,  # in y data units: ~1.5 %
                          fontproperties=FontProperties(size=8))  # fmt: skip
    bar.patch.set(facecolor="white", alpha=0.8, edgecolor="none")
    bar.set_gid("scale bar")
    ax.add_artist(bar)


def _limits(image: np.ma.MaskedArray) -> tuple[float, float]:
    lo, hi = (float(image.min()), float(image.max())) if image.count() else (0.0, 1.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _cmap(panel: str):
    import matplotlib

    # Grey scan images, inferno for diffraction; NaN shows what is behind (the hatching).
    diffraction = panel in ("dp", "sum")
    return matplotlib.colormaps["inferno" if diffraction else "gray"].with_extremes(bad="none")


def outline_masks(ax, masks: Mapping, lw: float = 1.2, fontsize: Any = "x-small",
                  coords=None) -> list:  # fmt: skip
    """Outline each mask at its 0.5 level, one colour each (edged in black), with a legend.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes showing the pattern.
    masks : mapping
        Name -> ``(ky, kx)`` weights; a mask below 0.5 everywhere has no outline.
    lw, fontsize
        Line width (points) and legend font size.
    coords : (x, y), optional
        Coordinates of the columns and the rows (e.g. in mrad); default pixel indices.

    Returns
    -------
    list of matplotlib.contour.QuadContourSet
    """
    from matplotlib.lines import Line2D
    from matplotlib.patheffects import withStroke

    contours, handles = [], []
    for i, (name, mask) in enumerate(masks.items()):
        colour = MASK_COLOURS[i % len(MASK_COLOURS)]
        weights = np.asarray(mask, dtype=np.float32)
        if np.nanmax(weights, initial=0.0) < 0.5:
            continue  # a weight mask below 0.5 everywhere has no outline at this level
        args = (weights,) if coords is None else (*coords, weights)
        contour = ax.contour(*args, levels=[0.5], colors=[colour], linewidths=lw)
        # A dark edge keeps a light outline visible on the bright disc as on the dark rim.
        contour.set_path_effects([withStroke(linewidth=lw + 1.6, foreground="black")])
        contours.append(contour)
        handles.append(Line2D([], [], color=colour, label=str(name), path_effects=[
            withStroke(linewidth=lw + 1.6, foreground="black")]))  # fmt: skip
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=fontsize, framealpha=0.6,
                  facecolor="0.3", labelcolor="white")  # fmt: skip
    return contours


def colour_bar(fig, image, ax, unit: str) -> None:
    """A colour bar for ``image`` beside ``ax``, labelled with ``unit``."""
    bar = fig.colorbar(image, ax=ax, shrink=0.85, pad=0.02)
    bar.set_label(unit, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _figure(caption: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=_FIGSIZE, layout="constrained")
    fig.supxlabel(caption, fontsize=7, color="0.35")
    return fig


def _image_axes(fig, spot, title: str):
    ax = fig.add_subplot(spot)
    ax.set_title(title, fontsize=9.5)
    # Hatching behind the image: a NaN (not received) shows blank, never white or black.
    ax.patch.set(hatch="////", edgecolor="0.8", facecolor="white")
    return ax


def _scan_aspect(shape, step) -> float | str:
    aspect = step[0] / step[1] if step else 1.0
    # A series (1 x n) or a very thin scan would be a line: stretch it instead.
    return "auto" if not 1 / 6 <= aspect * shape[0] / shape[1] <= 6 else aspect


def _scan_caption(shape, step) -> str:
    ny, nx = shape
    where = (f"step {step[0]:.4g} × {step[1]:.4g} nm, field {ny * step[0]:.3g} × "
             f"{nx * step[1]:.3g} nm" if step else "no scan-step calibration")  # fmt: skip
    return f"{ny} × {nx} positions · {where} · hatched: not received"


def _scan_figure(panel: str, image, *, title: str, unit: str, step=None):
    """A grey scan image with a colour bar (``unit``) and a scale bar."""
    data = np.ma.masked_invalid(np.asarray(image, dtype=np.float64))
    fig = _figure(_scan_caption(data.shape, step))
    ax = _image_axes(fig, 111, title)
    im = ax.imshow(data, cmap=_cmap(panel), clim=_limits(data), interpolation="nearest",
                   aspect=_scan_aspect(data.shape, step))  # fmt: skip
    ax.set(xticks=[], yticks=[])
    colour_bar(fig, im, ax, unit)
    scale_bar(ax, data.shape[1], data.shape[0], step[1] if step else None)
    return fig


def _com_figure(com_x, com_y, *, title: str, step=None, mrad_per_px=None, relative=True):
    """The COM as a colour-wheel image, with the wheel as its key (see module doc)."""
    x, y = np.asarray(com_x, dtype=np.float64), np.asarray(com_y, dtype=np.float64)
    mag = np.hypot(x, y)[np.isfinite(x) & np.isfinite(y)]
    vmax = float(np.percentile(mag, COM_PERCENTILE)) if mag.size else 0.0
    rgba = com_to_rgba(x, y, vmax=vmax if vmax > 0 else 1.0)
    fig = _figure(_scan_caption(x.shape, step))
    grid = fig.add_gridspec(1, 2, width_ratios=(1.0, 0.33))
    ax = _image_axes(fig, grid[0], title)
    ax.imshow(rgba, interpolation="nearest", aspect=_scan_aspect(x.shape, step))
    ax.set(xticks=[], yticks=[])
    scale_bar(ax, x.shape[1], x.shape[0], step[1] if step else None)

    key = fig.add_subplot(grid[1], label="colour wheel")
    centres = (np.arange(128) + 0.5) / 64 - 1  # pixel centres of the extent (-1, 1)
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    wheel = com_to_rgba(xx, yy, vmax=1.0)
    wheel[..., 3] = np.hypot(xx, yy) <= 1.0
    # Rows run down on screen, as in the image: +y of the COM points down here too.
    key.imshow(wheel, extent=(-1, 1, 1, -1), interpolation="bilinear")
    for dx, dy, name in ((1, 0, "kx"), (0, 1, "ky")):
        key.annotate(name, (1.25 * dx, 1.25 * dy), ha="center", va="center", fontsize=7)
    key.set(xlim=(-1.45, 1.45), ylim=(1.45, -1.45), xticks=[], yticks=[])
    for spine in key.spines.values():
        spine.set_visible(False)
    full = (f"{vmax * mrad_per_px:.3g} mrad" if mrad_per_px
            else f"{vmax:.3g} px\n(no mrad calibration)")  # fmt: skip
    key.set_title("hue: direction\non the detector", fontsize=7.5)
    size = "|COM − median|" if relative else "|COM|"
    key.set_xlabel(f"brightness:\n{size},\nfull from {full}", fontsize=7.5)
    return fig


def _pattern_figure(panel: str, pattern, *, title: str, unit: str, mrad_per_px=None,
                   centre=None, masks=None):  # fmt: skip
    """A diffraction pattern on a log scale, axes in mrad (or px) from the centre."""
    data = np.asarray(pattern, dtype=np.float64)
    ky, kx = data.shape
    cy, cx = (ky // 2, kx // 2) if centre is None else (float(c) for c in centre)
    # Angles with a calibration; detector coordinates without (no θ in px).
    (xname, yname, axis), a = (
        (("θx", "θy", "mrad"), mrad_per_px) if mrad_per_px else (("kx", "ky", "px"), 1.0)
    )
    caption = (f"{ky} × {kx} px · {mrad_per_px:.4g} mrad/px" if mrad_per_px
               else f"{ky} × {kx} px · no mrad calibration")  # fmt: skip
    fig = _figure(f"{caption} · centre ({cy:g}, {cx:g}) px")
    ax = _image_axes(fig, 111, title)
    shown = np.log1p(np.clip(np.ma.masked_invalid(data), 0.0, None))
    extent = ((-0.5 - cx) * a, (kx - 0.5 - cx) * a, (ky - 0.5 - cy) * a, (-0.5 - cy) * a)
    im = ax.imshow(shown, cmap=_cmap(panel), clim=_limits(shown), extent=extent,
                   interpolation="nearest")  # fmt: skip
    ax.set_xlabel(f"{xname} ({axis} from the centre)", fontsize=8)
    ax.set_ylabel(f"{yname} ({axis})", fontsize=8)
    ax.tick_params(labelsize=7)
    colour_bar(fig, im, ax, unit)
    if masks:
        coords = ((np.arange(kx) - cx) * a, (np.arange(ky) - cy) * a)
        outline_masks(ax, masks, coords=coords)
        ax.set(xlim=extent[:2], ylim=extent[2:])
    return fig


def _title(panel: str, run_uid, derived_uid) -> str:
    name = NAMES.get(panel, f"virtual detector '{panel}'")
    run = f" — run {str(run_uid)[:8]}" if run_uid else ""
    return name + run + (f" (derived {str(derived_uid)[:8]})" if derived_uid else "")


def _checked(images, masks, latest, centre):
    scan = {k: np.asarray(v) for k, v in images.items()
            if v is not None and k not in ("sum_dp", "max_dp")}  # fmt: skip
    for name, a in scan.items():
        if a.ndim != 2:
            raise ValueError(f"image {name!r} has shape {a.shape}; allowed: 2-D (ny, nx)")
    shapes = {a.shape for a in scan.values()}
    if len(shapes) > 1:
        raise ValueError(f"scan images have shapes { {k: a.shape for k, a in scan.items()} };"
                         " allowed: one (ny, nx) for all")  # fmt: skip
    patterns = [np.asarray(p) for p in (latest, images.get("sum_dp")) if p is not None]
    for p in patterns:
        if p.ndim != 2:
            raise ValueError(f"pattern shape {p.shape}; allowed: 2-D (ky, kx)")
    for name, mask in (masks or {}).items():
        if patterns and np.shape(mask) != patterns[0].shape:
            raise ValueError(f"mask {name!r} has shape {np.shape(mask)}; allowed: the "
                             f"pattern shape {patterns[0].shape}")  # fmt: skip
    if centre is not None and not _is_pair(centre):
        raise ValueError(f"centre={centre!r}; allowed: (cy, cx), two finite pixels")
    return scan


def panel_figures(
    images: Mapping[str, Any],
    *,
    masks: Mapping | None = None,
    latest=None,
    calibration: Mapping | None = None,
    centre=None,
    run_uid: str | None = None,
    derived_uid: str | None = None,
    com_offset: str | None = "median",
) -> dict:
    """One Figure per panel present in ``images``, in display order.

    Panels: ``bf``, ``adf``, each other virtual detector named in ``masks``, ``com``
    (from ``com_x``/``com_y``), ``idpc``, ``ddpc``, ``dp`` (``latest``, else
    ``sum_dp``) and ``sum`` (``sum_dp``, when ``latest`` is given too).

    Parameters
    ----------
    images : mapping
        name -> 2-D array, as in a ``LiveReduction.snapshot()`` or a derived run.
    masks : mapping, optional
        Detector name -> ``(ky, kx)`` weights, outlined on the patterns.
    latest : array, optional
        The latest diffraction pattern (the ``dp`` panel).
    calibration : mapping, optional
        The raw run's ``start["calibration"]``: ``scan_step_nm`` [dy, dx] and
        ``angle_per_pixel_mrad`` give the scale bars, units and pattern axes.
    centre : (cy, cx), optional
        Pattern centre in px (the spec's); default ``(ky // 2, kx // 2)``.
    run_uid, derived_uid : str, optional
        Named in every title (8 characters).
    com_offset : {"median", None}
        Colour the COM relative to its median (a descan does not paint it one hue). The
        colour wheel is :func:`com_to_rgba`, at full brightness from the
        ``COM_PERCENTILE`` (99th) percentile of the magnitude, stated in the key.

    Returns
    -------
    dict
        panel name -> :class:`matplotlib.figure.Figure` (pyplot never sees them).

    Raises
    ------
    ValueError
        A bad calibration, image, mask or centre, named with what is allowed.
    """
    if com_offset not in ("median", None):
        raise ValueError(f"com_offset={com_offset!r} must be 'median' or None")
    step, mrad = scale_from_calibration(calibration)
    scan = _checked(images, masks, latest, centre)
    d = "nm" if step else "scan step"
    figs, titles = {}, {p: _title(p, run_uid, derived_uid) for p in (*NAMES, *scan)}
    others = [n for n in (masks or {}) if n in scan and n not in NAMES]
    for name in ("bf", "adf", *others):
        if name in scan:
            unit = UNITS.get(name, UNITS["detector"]).format(name=name)
            figs[name] = _scan_figure(name, scan[name], title=titles[name], unit=unit, step=step)
    if "com_x" in scan and "com_y" in scan:
        x, y = scan["com_x"].astype(np.float64), scan["com_y"].astype(np.float64)
        if com_offset == "median" and np.isfinite(x).any() and np.isfinite(y).any():
            x, y = x - np.nanmedian(x), y - np.nanmedian(y)
        figs["com"] = _com_figure(x, y, title=titles["com"], step=step, mrad_per_px=mrad,
                                 relative=com_offset == "median")  # fmt: skip
    for name in ("idpc", "ddpc"):
        if name in scan:
            unit = UNITS[name].format(d=d)
            figs[name] = _scan_figure(name, scan[name], title=titles[name], unit=unit, step=step)
    sum_dp = images.get("sum_dp")
    pattern = latest if latest is not None else sum_dp
    kw = {"mrad_per_px": mrad, "centre": centre, "masks": masks}
    if pattern is not None:
        what = "dp" if latest is not None else "sum"  # no frame yet: the summed pattern
        figs["dp"] = _pattern_figure("dp", pattern, title=titles[what], unit=UNITS[what], **kw)
    if latest is not None and sum_dp is not None:
        figs["sum"] = _pattern_figure("sum", sum_dp, title=titles["sum"], unit=UNITS["sum"],
                                     **kw)  # fmt: skip
    return figs
