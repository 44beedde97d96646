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

from bluestem.callbacks.image_panels import (
    UNITS,
    _cmap,
    _limits,
    colour_bar,
    com_to_rgba,
    outline_masks,
    scale_bar,
    scale_from_calibration,
    usable_calibration,
)

__all__ = ["PANELS", "ImageSource", "LiveImages", "com_to_rgba", "save_image_pngs"]

log = logging.getLogger(__name__)

PANELS = ("bf", "adf", "com", "idpc", "dp")
_TITLES = {"bf": "bright field", "adf": "annular dark field", "idpc": "iDPC",
           "com": "centre of mass (hue: direction, brightness: size)",
           "dp": "diffraction (log)"}  # fmt: skip


@runtime_checkable
class ImageSource(Protocol):
    """What a live reducer offers :class:`LiveImages`.

    ``snapshot()`` returns a mapping with ``"images"`` (name -> 2-D float64: scan images
    ``(ny, nx)`` with NaN where not reduced yet, e.g. ``bf``, ``adf``, ``com_x``,
    ``com_y``, ``idpc``; ``sum_dp`` is ``(ky, kx)``), ``"latest"`` (the latest pattern
    ``(ky, kx)`` or None), ``"masks"`` (name -> ``(ky, kx)`` float32 weights), ``"uid"``
    (the raw run's uid or None), ``"frames"`` (reduced so far) and ``"total"``
    (expected).

    Optionally, a ``derived_uid`` attribute: the uid of the derived run the source made
    from the last run it finished (None before). :class:`LiveImages` reads it at the stop
    document, after the source (subscribed first) has handled that stop, and names it in
    the saved images' titles when it changed during the run.
    """

    def snapshot(self) -> Mapping[str, Any]: ...


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


def save_image_pngs(
    images: Mapping[str, Any],
    out_dir: str | Path,
    tag: str,
    masks: Mapping[str, Any] | None = None,
    latest: np.ndarray | None = None,
    *,
    com_offset: str | None = "median",
    calibration: Mapping[str, Any] | None = None,
    centre=None,
    run_uid: str | None = None,
    derived_uid: str | None = None,
    dpi: float = 150,
) -> list[Path]:
    """Write one PNG per panel, ``{panel}-{tag}.png``, each a figure a microscopist can read.

    Panels and their figures are :func:`bluestem.callbacks.image_panels.panel_figures`'s:
    bf, adf, other virtual detectors, com, idpc, ddpc, dp and sum, each with a title
    naming it and the run(s), a colour key with its unit and, on scan images, a scale bar
    (nm with ``calibration["scan_step_nm"]``, scan steps without). Absent images are
    skipped.

    Parameters
    ----------
    images, masks : mapping
        As in :class:`ImageSource` snapshots; masks are outlined on the patterns.
    out_dir : path
        Directory (created if missing).
    tag : str
        File-name suffix: the first 8 characters of the raw run's uid.
    latest : array, optional
        The diffraction pattern for the dp panel (default: ``images["sum_dp"]``).
    com_offset : {"median", None}
        Subtract the median COM before colouring (see :class:`LiveImages`).
    calibration : mapping, optional
        The raw run's ``start["calibration"]`` (``scan_step_nm``, ``angle_per_pixel_mrad``).
    centre : (cy, cx), optional
        Pattern centre in px (the reduction spec's); default ``(ky // 2, kx // 2)``.
    run_uid, derived_uid : str, optional
        The raw run (default: ``tag``) and the derived run, named in the titles.
    dpi : float
        Resolution of the PNGs (> 0); a panel is 5.6 x 4.6 inches.

    Returns
    -------
    list of pathlib.Path
        The files written, in panel order.
    """
    from bluestem.callbacks.image_panels import panel_figures

    tag = str(tag)
    if not tag or "/" in tag or "\\" in tag:
        raise ValueError(f"tag={tag!r} must be a non-empty file-name part (no slashes)")
    if not (isinstance(dpi, int | float) and 10 <= dpi <= 1200):
        raise ValueError(f"dpi={dpi!r}; allowed: 10 <= dpi <= 1200")
    figures = panel_figures(images, masks=masks, latest=latest, calibration=calibration,
                            centre=centre, run_uid=run_uid or tag, derived_uid=derived_uid,
                            com_offset=com_offset)  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for panel, fig in figures.items():
        target = out / f"{panel}-{tag}.png"
        fig.savefig(target, dpi=dpi, facecolor="white")
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
    calibration : mapping or None
        The current run's ``start["calibration"]``: the scale of the saved PNGs (a bad
        one is logged and the PNGs are saved uncalibrated).
    centre : (cy, cx) or None
        The pattern centre of the run's ``start["reduction"]`` (the dp axes' origin).
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
        self.calibration: Mapping | None = None
        self.centre = self._derived_before = None
        self._drop_figure()

    def __call__(self, name: str, doc: dict) -> None:
        try:
            if name == "start":
                self.uid, self.draws, self.saved, self.error = doc.get("uid"), 0, [], None
                self._last = -np.inf
                # The raw start document holds the scale; the snapshot does not.
                self.calibration, why = usable_calibration(doc.get("calibration"))
                if why:
                    log.warning("run %s: images without a scale: %s", self.uid, why)
                self.centre = (doc.get("reduction") or {}).get("centre")
                self._derived_before = getattr(self.source, "derived_uid", None)
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
            self._keys(panel, ax, data)
        if "com" in self.axes:
            self._colour_wheel(self.axes["com"])

    def _keys(self, panel: str, ax, data) -> None:
        """What makes a saved live figure readable too: a colour bar with its unit, and a
        scale bar on scan images (the per-panel PNGs have the full treatment)."""
        step, _ = scale_from_calibration(self.calibration)  # checked at the start
        if panel in UNITS:
            unit = UNITS[panel].format(d="nm" if step else "scan step")
            colour_bar(self.figure, self._artists[panel], ax, unit)
        if panel in ("bf", "adf", "com", "idpc"):
            h, w = data.shape[:2]
            scale_bar(ax, w, h, step[1] if step else None)

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
        outline_masks(ax, masks)
        self._masks_drawn = key

    # -- stop --------------------------------------------------------------------------

    def _save(self, snap: Mapping) -> None:
        uid = snap.get("uid") or self.uid or "nouid"
        tag = uid[:8]
        images, masks, latest = snap.get("images") or {}, snap.get("masks"), snap.get("latest")
        derived = getattr(self.source, "derived_uid", None)
        # Unchanged since the start: this run made no derived run (the last one is older).
        derived = None if derived == self._derived_before else derived
        self.saved = save_image_pngs(
            images, self.out_dir, tag, masks, latest, com_offset=self.com_offset,
            calibration=self.calibration, centre=self.centre, run_uid=uid,
            derived_uid=derived,
        )  # fmt: skip
        if self.figure is not None:
            whole = self.out_dir / f"live-{tag}.png"
            if derived:
                title = self.figure.get_suptitle()
                self.figure.suptitle(f"{title}  (derived run {derived[:8]})")
            self.figure.savefig(whole, dpi=100)
            self.saved.append(whole)

    def _drop_figure(self) -> None:
        # A headless figure is pyplot-free: dropping the references frees it.
        self.figure, self.axes, self._artists, self._masks_drawn = None, {}, {}, ()
        self._thread: int | None = None
