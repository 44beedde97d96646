"""LiveImages: a bluesky callback showing what a live reducer has computed so far.

The reducer owns the numbers; this callback pulls its snapshot when a document arrives
(at most every ``min_interval`` s) and draws BF, ADF, COM, iDPC and the latest pattern
with the masks outlined: one window on the RunEngine's thread with a GUI backend, or a
pyplot-free figure saved as PNGs at the stop document when headless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["PANELS", "ImageSource", "LiveImages", "com_to_rgba", "save_image_pngs"]

log = logging.getLogger(__name__)

PANELS = ("bf", "adf", "com", "idpc", "dp")
_TITLES = {"bf": "bright field", "adf": "annular dark field", "idpc": "iDPC",
           "com": "centre of mass (hue: direction, brightness: size)",
           "dp": "diffraction (log)"}  # fmt: skip
_MASK_COLOURS = ("tab:cyan", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:pink")
_PNG_DPI = 64  # a power of two: n / 64 inches * 64 dpi is exactly n pixels


@runtime_checkable
class ImageSource(Protocol):
    """What a live reducer offers :class:`LiveImages`.

    ``snapshot()`` returns a mapping with ``"images"`` (name -> 2-D float64: scan images
    ``(ny, nx)`` with NaN where not reduced yet, e.g. ``bf``, ``adf``, ``com_x``,
    ``com_y``, ``idpc``; ``sum_dp`` is ``(ky, kx)``), ``"latest"`` (the latest pattern
    ``(ky, kx)`` or None), ``"masks"`` (name -> ``(ky, kx)`` float32 weights), ``"uid"``
    (run uid or None), ``"frames"`` (reduced so far) and ``"total"`` (expected).
    """

    def snapshot(self) -> Mapping[str, Any]: ...


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


def _com_image(images: Mapping, com_offset: str | None) -> np.ndarray:
    x, y = images["com_x"], images["com_y"]
    if com_offset == "median" and np.isfinite(x).any() and np.isfinite(y).any():
        # A descan or centre offset would paint every pixel one hue: show the deflection
        # relative to the typical beam position instead.
        x, y = x - np.nanmedian(x), y - np.nanmedian(y)
    return com_to_rgba(x, y)


def _panel_arrays(images: Mapping, latest, com_offset) -> dict[str, Any]:
    """The panels present in a snapshot, in display order, as what imshow gets."""

    def blank_nan(a):
        return np.ma.masked_invalid(np.asarray(a, dtype=np.float64))

    out: dict[str, Any] = {}
    for name in ("bf", "adf"):
        if images.get(name) is not None:
            out[name] = blank_nan(images[name])
    if images.get("com_x") is not None and images.get("com_y") is not None:
        out["com"] = _com_image(images, com_offset)
    if images.get("idpc") is not None:
        out["idpc"] = blank_nan(images["idpc"])
    pattern = latest if latest is not None else images.get("sum_dp")
    if pattern is not None:
        out["dp"] = np.log1p(np.clip(blank_nan(pattern), 0.0, None))
    return out


def _limits(image: np.ma.MaskedArray) -> tuple[float, float]:
    lo, hi = (float(image.min()), float(image.max())) if image.count() else (0.0, 1.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _cmap(panel: str):
    import matplotlib

    # The demo's maps: grey scan images, inferno for diffraction; NaN shows blank.
    diffraction = panel in ("dp", "sum")
    return matplotlib.colormaps["inferno" if diffraction else "gray"].with_extremes(bad="none")


def _outline_masks(ax, masks: Mapping, lw: float = 1.2, fontsize: Any = "x-small") -> list:
    """One contour at 0.5 per mask, one colour each, with a legend."""
    from matplotlib.lines import Line2D

    contours, handles = [], []
    for i, (name, mask) in enumerate(masks.items()):
        colour = _MASK_COLOURS[i % len(_MASK_COLOURS)]
        weights = np.asarray(mask, dtype=np.float32)
        if np.nanmax(weights, initial=0.0) < 0.5:
            continue  # a weight mask below 0.5 everywhere has no outline at this level
        contours.append(ax.contour(weights, levels=[0.5], colors=[colour], linewidths=lw))
        handles.append(Line2D([], [], color=colour, label=str(name)))
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=fontsize, framealpha=0.6)
    return contours


def save_image_pngs(
    images: Mapping[str, Any],
    out_dir: str | Path,
    tag: str,
    masks: Mapping[str, Any] | None = None,
    latest: np.ndarray | None = None,
    *,
    scale: int | None = None,
    com_offset: str | None = "median",
) -> list[Path]:
    """Write one PNG per panel: ``{panel}-{tag}.png`` for bf, adf, com, idpc, dp and sum.

    Each PNG is the image itself (no axes or title), ``scale`` screen pixels per image
    pixel (nearest neighbour), NaN transparent; ``dp`` is ``latest`` (or
    ``images["sum_dp"]``) on a log scale with each mask outlined at 0.5, and ``sum`` the
    sum pattern as well when ``latest`` is given. Absent images are skipped.

    Parameters
    ----------
    images, masks : mapping
        As in :class:`ImageSource` snapshots; masks are outlined on the dp panel.
    out_dir : path
        Directory (created if missing).
    tag : str
        File-name suffix, e.g. the first 8 characters of the run uid.
    latest : array, optional
        The diffraction pattern for the dp panel.
    scale : int, optional
        Pixels per image pixel; default the largest keeping the longer side <= 512.
    com_offset : {"median", None}
        Subtract the median COM before colouring (see :class:`LiveImages`).

    Returns
    -------
    list of pathlib.Path
        The files written, in panel order.
    """
    from matplotlib.figure import Figure

    tag = str(tag)
    if not tag or "/" in tag or "\\" in tag:
        raise ValueError(f"tag={tag!r} must be a non-empty file-name part (no slashes)")
    if scale is not None and int(scale) < 1:
        raise ValueError(f"scale={scale} must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    panels = _panel_arrays(images, latest, com_offset)
    if latest is not None and images.get("sum_dp") is not None:
        sum_dp = np.ma.masked_invalid(np.asarray(images["sum_dp"], dtype=np.float64))
        panels["sum"] = np.log1p(np.clip(sum_dp, 0.0, None))
    for panel, data in panels.items():
        h, w = data.shape[:2]
        s = max(1, 512 // max(h, w)) if scale is None else int(scale)
        fig = Figure(figsize=(w * s / _PNG_DPI, h * s / _PNG_DPI), dpi=_PNG_DPI)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()
        kw = {} if panel == "com" else {"cmap": _cmap(panel), "clim": _limits(data)}
        ax.imshow(data, interpolation="nearest", aspect="auto", **kw)
        if panel in ("dp", "sum") and masks:
            _outline_masks(ax, masks, lw=1.5 * 72 / _PNG_DPI, fontsize=11 * 72 / _PNG_DPI)
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        target = out / f"{panel}-{tag}.png"
        fig.savefig(target, dpi=_PNG_DPI, transparent=True)
        written.append(target)
    return written


def _is_headless() -> bool:
    import matplotlib
    from matplotlib.backends import BackendFilter, backend_registry

    builtin = backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)
    return matplotlib.get_backend().lower() in builtin


class LiveImages:
    """Bluesky callback drawing a live reducer's images while a run goes.

    Parameters
    ----------
    source : ImageSource
        Object with ``snapshot()`` (see :class:`ImageSource`).
    out_dir : path, optional
        Where the stop document's PNGs go (headless or not); required when headless.
    headless : bool, optional
        Draw without a window and save PNGs at stop. Default: True when matplotlib's
        backend is non-interactive (Agg and the file backends).
    min_interval : float
        Least seconds between two redraws (the stop document always redraws).
    clock : callable
        Monotonic time source (tests inject a fake one).
    com_offset : {"median", None}
        ``"median"`` colours the COM relative to its median, so a beam offset does not
        paint the whole image one hue; None colours the reducer's values as they are.

    Attributes
    ----------
    figure : matplotlib.figure.Figure or None
        The figure (kept after an interactive run; dropped after a headless one).
    axes : dict
        Panel name -> Axes of the current figure.
    draws : int
        Redraws in the current run.
    saved : list of pathlib.Path
        PNGs written at the last stop document: one per panel, then the whole figure
        (``live-{uid[:8]}.png``); uid is the snapshot's, else the start document's.
    error : Exception or None
        The last error swallowed while drawing (a display never stops a run).
    """

    def __init__(
        self,
        source: ImageSource,
        *,
        out_dir: str | Path | None = None,
        headless: bool | None = None,
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        com_offset: str | None = "median",
    ) -> None:
        if not callable(getattr(source, "snapshot", None)):
            raise TypeError(f"source {source!r} has no snapshot() method")
        if not float(min_interval) >= 0:
            raise ValueError(f"min_interval={min_interval} must be >= 0 s")
        if com_offset not in ("median", None):
            raise ValueError(f"com_offset={com_offset!r} must be 'median' or None")
        self.source = source
        self.headless = _is_headless() if headless is None else bool(headless)
        if self.headless and out_dir is None:
            raise ValueError("LiveImages is headless (non-interactive matplotlib backend or "
                             "headless=True): it needs out_dir=DIR for its PNGs")  # fmt: skip
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.min_interval, self.clock, self.com_offset = float(min_interval), clock, com_offset
        self.draws, self.saved, self.error, self.uid, self._last = 0, [], None, None, -np.inf
        self._drop_figure()

    def __call__(self, name: str, doc: dict) -> None:
        try:
            if name == "start":
                self.uid, self.draws, self.saved, self.error = doc.get("uid"), 0, [], None
                self._last = -np.inf
            final = name == "stop"
            if final or self.clock() - self._last >= self.min_interval:
                snap = self._draw()
                if final and self.out_dir is not None and snap is not None:
                    self._save(snap)  # interactive too: the window may close, files stay
        except Exception as exc:  # a display never stops a run
            if type(exc) is not type(self.error):  # once per kind of failure, not at 10 Hz
                log.exception("LiveImages failed on a %s document", name)
            self.error = exc
        finally:
            if name == "stop" and self.headless:
                self._drop_figure()

    # -- drawing -----------------------------------------------------------------------

    def _draw(self) -> Mapping | None:
        if self._thread is not None and threading.get_ident() != self._thread:
            log.warning("LiveImages called off the thread that made its figure: not drawn")
            return None
        self._last = self.clock()  # a failing snapshot is retried at the same pace
        snap = self.source.snapshot()
        images = snap.get("images") or {}
        panels = _panel_arrays(images, snap.get("latest"), self.com_offset)
        if not panels:
            return snap
        if self._window_closed() or tuple(panels) != tuple(self.axes):
            self._layout(panels)
        for panel, data in panels.items():
            artist = self._artists[panel]
            h, w = data.shape[:2]
            if artist.get_array().shape[:2] != (h, w):
                artist.set_extent((-0.5, w - 0.5, h - 0.5, -0.5))
            artist.set_data(data)
            if panel != "com":
                artist.set_clim(*_limits(data))
        self._outline(snap.get("masks") or {})
        frames, total = int(snap.get("frames") or 0), int(snap.get("total") or 0)
        progress = f"{frames:,}/{total:,} frames" + (f" ({frames / total:.0%})" if total else "")
        uid = snap.get("uid") or self.uid
        self.figure.suptitle(f"{'run ' + uid[:8] + '  ' if uid else ''}{progress}")
        self.draws += 1
        if not self.headless:
            self.figure.canvas.draw_idle()
            self.figure.canvas.flush_events()
        return snap

    def _window_closed(self) -> bool:
        if self.figure is None or self.headless:
            return self.figure is None
        import matplotlib.pyplot as plt

        return not plt.fignum_exists(self.figure.number)  # the user closed the window

    def _layout(self, panels: Mapping[str, Any]) -> None:
        ncols = min(3, len(panels))
        nrows = -(-len(panels) // ncols)
        if self._window_closed():
            self.figure = self._new_figure((4.0 * ncols, 4.0 * nrows + 0.4))
            self._thread = threading.get_ident()
        else:
            self.figure.clear()
        self.axes, self._artists, self._masks_drawn = {}, {}, ()
        for i, (panel, data) in enumerate(panels.items()):
            ax = self.figure.add_subplot(nrows, ncols, i + 1)
            ax.set_title(_TITLES[panel], fontsize="small")
            ax.set(xticks=[], yticks=[])
            # Hatching behind the image: a NaN (not reduced yet) shows blank, never white.
            ax.patch.set(hatch="////", edgecolor="0.8", facecolor="white")
            kw = {} if panel == "com" else {"cmap": _cmap(panel)}
            self._artists[panel] = ax.imshow(data, interpolation="nearest", **kw)
            self.axes[panel] = ax
        if "com" in self.axes:
            self._colour_wheel(self.axes["com"])

    def _new_figure(self, size):
        if self.headless:
            from matplotlib.figure import Figure

            # Not through pyplot: nothing registered globally, nothing to leak.
            return Figure(figsize=size, layout="constrained")
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=size, layout="constrained")
        if not _is_headless():  # Agg with headless=False: draw, but there is no window
            fig.show()
        return fig

    def _colour_wheel(self, ax) -> None:
        yy, xx = np.mgrid[-1:1:64j, -1:1:64j]
        wheel = com_to_rgba(xx, yy, vmax=1.0)
        wheel[..., 3] = np.hypot(xx, yy) <= 1.0
        inset = ax.inset_axes((0.76, 0.76, 0.22, 0.22))
        inset.imshow(wheel, interpolation="bilinear")
        inset.set_axis_off()

    def _outline(self, masks: Mapping) -> None:
        ax = self.axes.get("dp")
        key = tuple((name, id(mask)) for name, mask in masks.items())
        if ax is None or key == self._masks_drawn:
            return
        for artist in [*ax.collections]:
            artist.remove()
        if ax.get_legend():
            ax.get_legend().remove()
        _outline_masks(ax, masks)
        self._masks_drawn = key

    # -- stop --------------------------------------------------------------------------

    def _save(self, snap: Mapping) -> None:
        tag = (snap.get("uid") or self.uid or "nouid")[:8]
        images, masks, latest = snap.get("images") or {}, snap.get("masks"), snap.get("latest")
        self.saved = save_image_pngs(
            images, self.out_dir, tag, masks, latest, com_offset=self.com_offset
        )
        if self.figure is not None:
            whole = self.out_dir / f"live-{tag}.png"
            self.figure.savefig(whole, dpi=100)
            self.saved.append(whole)

    def _drop_figure(self) -> None:
        # A headless figure is pyplot-free: dropping the references frees it.
        self.figure, self.axes, self._artists, self._masks_drawn = None, {}, {}, ()
        self._thread: int | None = None
