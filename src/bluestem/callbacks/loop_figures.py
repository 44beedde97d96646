"""Figures of a closed loop's current estimate, drawn from its record only.

:func:`loop_figure` draws a :class:`bluestem.loop.LoopRecord` (the umbrella run's
documents, decoded by :func:`bluestem.loop.read_loop`): nothing comes from a device, so
the figure of a loop replayed from the catalogue is the figure drawn while it ran.

Panels, in order, each present only when the record holds what it needs:

- one **convergence** panel per numeric entry of the measurement's ``values``: the
  estimate against the iteration, with its ``uncertainties`` as error bars (SI lengths in
  nm and angles in degrees when ``units`` says ``m`` or ``rad``; a loop whose goal names
  ``units`` and measures one value uses those);
- the **settings** that changed during the loop, as read back, against the iteration;
- **A1** (when the values hold ``a1`` and ``a1_angle``): the fitted two-fold
  astigmatism as the vector ``(A1 cos 2φ, A1 sin 2φ)``, iteration by iteration;
- **parallax** (when the measurement has ``parallax.theta`` and ``parallax.shifts``):
  the measured bright-field image shifts (and ``model_shifts``) against the bin angle;
- **PACBED fit** (``fit.library_thicknesses`` and ``fit.reduced_chi2``): reduced χ²
  of every library entry, the fitted thickness ± σ marked;
- **PACBED patterns** (``patterns.measured`` and ``patterns.best``): the measured
  pattern beside the best library entry as fitted (aligned, same total).
- **survey map** (a measurement with a ``features`` list: the adaptive survey): the
  features found in the survey, numbered, and where each fine scan found its particle
  (its ``target`` plus its ``centring_nm``), in the survey's frame.

Figures are pyplot-free (:class:`matplotlib.figure.Figure`) unless one is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

import numpy as np

__all__ = ["COLUMNS", "PANEL_SIZE", "TITLE_HEIGHT", "figure_size", "goal_label",
           "loop_figure", "panels", "value_units"]  # fmt: skip

#: Inches of one panel (width, height), panels per row, inches of the title.
PANEL_SIZE = (4.0, 3.2)
COLUMNS = 3
TITLE_HEIGHT = 0.5
#: Display scale of an SI unit: factor and label.
_DISPLAY = {"m": (1e9, "nm"), "rad": (180.0 / math.pi, "deg")}


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def goal_label(info: Mapping[str, Any], width: int = 48) -> str:
    """A short name of a loop's goal (``start.closed_loop.goal``): a string as it is;
    a mapping's ``quantity``, else its first text entry (``key: text``, or the key when
    that is longer than ``width``); cut to ``width`` characters."""
    goal = info.get("goal")
    if isinstance(goal, Mapping):
        text = goal.get("quantity")
        if not isinstance(text, str):
            first = next(((k, v) for k, v in goal.items() if isinstance(v, str)), None)
            text = f"{first[0]}: {first[1]}" if first else ""
            text = first[0] if first and len(text) > width else text  # its name
    else:
        text = "" if goal is None else str(goal)
    text = text or "(no goal)"
    return text if len(text) <= width else text[: width - 1] + "…"


def value_units(analysis: Mapping[str, Any], info: Mapping[str, Any]) -> dict:
    """``{value name: (factor, unit label)}`` to display each numeric value."""
    values = analysis.get("values") or {}
    units = analysis.get("units")
    if not isinstance(units, Mapping):
        goal = info.get("goal")
        # One value and a goal naming its unit (the PACBED loop): that unit.
        one = isinstance(goal, Mapping) and isinstance(goal.get("units"), str)
        units = {name: goal["units"] for name in values} if one and len(values) == 1 else {}
    return {name: _DISPLAY.get(str(units.get(name, "")), (1.0, str(units.get(name, ""))))
            for name, v in values.items() if _number(v)}  # fmt: skip


def _series(record, name: str) -> tuple[list, list, list]:
    """Iterations, values and uncertainties (NaN where absent) of one value."""
    its, vals, errs = [], [], []
    for row in record.iterations:
        v = (row.analysis.get("values") or {}).get(name)
        if _number(v):
            e = (row.analysis.get("uncertainties") or {}).get(name)
            its.append(row.iteration)
            vals.append(float(v))
            errs.append(float(e) if _number(e) else math.nan)
    return its, vals, errs


def _iteration_axis(ax, record) -> None:
    from matplotlib.ticker import MaxNLocator

    last = max((r.iteration for r in record.iterations), default=0)
    ax.set_xlim(-0.5, last + 0.5)  # one iteration is a point, not a span
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)


def _convergence(name: str, factor: float, unit: str) -> Callable:
    def draw(ax, record, latest) -> None:
        its, vals, errs = _series(record, name)
        y, e = np.asarray(vals) * factor, np.asarray(errs) * abs(factor)
        ax.errorbar(its, y, yerr=np.where(np.isfinite(e), e, 0.0), marker="o", capsize=3)
        if its and its[-1] == latest.iteration:
            ax.plot(its[-1:], y[-1:], marker="o", markersize=10, mfc="none", color="C3")
        ax.set(title=f"{name}" + (f" ({unit})" if unit else ""), xlabel="iteration")
        _iteration_axis(ax, record)

    return draw


def _changed_settings(record) -> list[str]:
    names: dict[str, set] = {}
    for row in record.iterations:
        for k, v in row.readback.items():
            if _number(v):
                names.setdefault(k, set()).add(float(v))
    return [k for k, seen in names.items() if len(seen) > 1]


def _settings(ax, record, latest) -> None:
    for i, name in enumerate(_changed_settings(record)):
        pts = [(r.iteration, float(r.readback[name])) for r in record.iterations
               if _number(r.readback.get(name))]  # fmt: skip
        ax.plot(*zip(*pts, strict=True), marker="os^vD"[i % 5], label=name)
    ax.set(title="settings read back", xlabel="iteration")
    _iteration_axis(ax, record)
    ax.legend(fontsize="x-small")


def _a1_plane(ax, record, latest) -> None:
    xs, ys = [], []
    for row in record.iterations:
        v, s = row.analysis.get("values") or {}, row.analysis.get("uncertainties") or {}
        if not (_number(v.get("a1")) and _number(v.get("a1_angle"))):
            continue
        a, phi = float(v["a1"]) * 1e9, float(v["a1_angle"])
        xs.append(a * math.cos(2 * phi))
        ys.append(a * math.sin(2 * phi))
        ax.annotate(str(row.iteration), (xs[-1], ys[-1]), fontsize="x-small",
                    textcoords="offset points", xytext=(4, 4))  # fmt: skip
        if _number(s.get("a1")):
            ax.add_patch(_circle((xs[-1], ys[-1]), float(s["a1"]) * 1e9))
    ax.plot(xs, ys, marker="o")
    ax.plot([0], [0], marker="+", markersize=12, color="k")
    top = max([1.0, *map(abs, xs), *map(abs, ys)]) * 1.15
    ax.set(xlim=(-top, top), ylim=(-top, top), aspect="equal",
           title="A1 estimate (nm)", xlabel="A1 cos 2φ", ylabel="A1 sin 2φ")  # fmt: skip
    ax.grid(alpha=0.3)


def _circle(centre, radius):
    from matplotlib.patches import Circle

    return Circle(centre, radius, fill=False, alpha=0.4, linestyle="--")


def _parallax(ax, record, latest) -> None:
    par = latest.analysis["parallax"]
    theta = np.asarray(par["theta"], float) * 1e3  # (θy, θx), mrad
    for key, colour in (("shifts", "C0"), ("model_shifts", "C1")):
        if key in par:
            d = np.asarray(par[key], float)  # (dy, dx), scan px
            ax.quiver(theta[:, 1], theta[:, 0], d[:, 1], d[:, 0], color=colour,
                      angles="xy", label=key.replace("_", " "))  # fmt: skip
    ax.set(title=f"BF parallax, iteration {latest.iteration}", xlabel="θx (mrad)",
           ylabel="θy (mrad)", aspect="equal")  # fmt: skip
    ax.invert_yaxis()  # detector rows run down, as the patterns are drawn
    ax.legend(fontsize="x-small")


def _pacbed_fit(ax, record, latest) -> None:
    for row in record.iterations:
        fit = row.analysis.get("fit") or {}
        t = np.asarray(fit.get("library_thicknesses", []), float) * 1e9
        chi = np.asarray(fit.get("reduced_chi2", []), float)
        if len(t) != len(chi) or not len(t):
            continue
        now = row is latest
        ax.semilogy(t, chi, color="C0" if now else "0.7", lw=1.2 if now else 0.8,
                    label=f"iteration {row.iteration}")  # fmt: skip
    fit = latest.analysis["fit"]
    if _number(fit.get("thickness")):
        t0 = float(fit["thickness"]) * 1e9
        s = float(fit["uncertainty"]) * 1e9 if _number(fit.get("uncertainty")) else 0.0
        ax.axvspan(t0 - s, t0 + s, color="C3", alpha=0.25)
        ax.axvline(t0, color="C3", lw=1, label=f"fit {t0:.2f} ± {s:.2f} nm")
    ax.set(title="PACBED: reduced χ² per library entry", xlabel="thickness (nm)")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3)


def _pattern(which: str) -> Callable:
    def draw(ax, record, latest) -> None:
        pats = latest.analysis["patterns"]
        both = [np.log1p(np.clip(np.asarray(pats[k], float), 0, None))
                for k in ("measured", "best")]  # fmt: skip
        image = both[0 if which == "measured" else 1]
        top = max(1e-9, *(float(b.max(initial=0.0)) for b in both))  # one scale for both
        ax.imshow(image, cmap="inferno", vmin=0.0, vmax=top, interpolation="nearest")
        t = pats.get("best_thickness")
        label = (f"best library entry ({float(t) * 1e9:.2f} nm)" if _number(t)
                 else "best library entry")  # fmt: skip
        ax.set(title=(f"measured PACBED, it. {latest.iteration}" if which == "measured"
                      else label) + ", log", xticks=[], yticks=[])  # fmt: skip

    return draw


def _survey_map(ax, record, latest) -> None:
    from matplotlib.patches import Circle

    rows = record.iterations
    survey = next(r for r in rows if isinstance(r.analysis.get("features"), list))
    for i, f in enumerate(survey.analysis["features"]):
        ax.add_patch(Circle((float(f["x_nm"]), float(f["y_nm"])), float(f.get("radius_nm", 1.0)),
                            fill=False, color="C0", alpha=0.8))  # fmt: skip
        ax.annotate(str(i + 1), (float(f["x_nm"]), float(f["y_nm"])), fontsize="x-small",
                    color="C0", ha="center", va="center")  # fmt: skip
    shape, step = survey.analysis.get("image_shape"), survey.analysis.get("step_nm")
    if shape and step:  # the survey's field, centred on its scan centre
        h, w = float(shape[0]) * float(step[0]) / 2, float(shape[1]) * float(step[1]) / 2
        ax.set(xlim=(-w, w), ylim=(h, -h))
    # Where each fine scan found its particle, in the survey's frame: target + centring.
    for r in rows:
        target, centre = r.analysis.get("target") or {}, r.analysis.get("centring_nm")
        if _has(target, "y_nm", "x_nm") and centre:
            y = float(target["y_nm"]) + float(centre[0])
            x = float(target["x_nm"]) + float(centre[1])
            ax.plot([x], [y], marker="x", color="C3", ms=8)
    ax.set(title=f"survey: features (blue), fine scans' particles (red x), it. "
           f"{latest.iteration}", xlabel="x (nm)", ylabel="y (nm)", aspect="equal")  # fmt: skip


def _has(mapping: Any, *keys: str) -> bool:
    return isinstance(mapping, Mapping) and all(mapping.get(k) is not None for k in keys)


def panels(record) -> list[tuple[str, Callable]]:
    """``(name, draw(ax, record, latest row))`` of every panel the record can fill."""
    if not record.iterations:
        return []
    latest = record.iterations[-1]
    analysis = latest.analysis
    found = [(f"value {name}", _convergence(name, factor, unit))
             for name, (factor, unit) in value_units(analysis, record.info).items()]  # fmt: skip
    if _changed_settings(record):
        found.append(("settings", _settings))
    if _has(analysis.get("values"), "a1", "a1_angle"):
        found.append(("a1", _a1_plane))
    if _has(analysis.get("parallax"), "theta", "shifts"):
        found.append(("parallax", _parallax))
    if _has(analysis.get("fit"), "library_thicknesses", "reduced_chi2"):
        found.append(("pacbed fit", _pacbed_fit))
    if any(isinstance(r.analysis.get("features"), list) for r in record.iterations):
        found.append(("survey map", _survey_map))
    if _has(analysis.get("patterns"), "measured", "best"):
        found += [("pacbed measured", _pattern("measured")), ("pacbed best", _pattern("best"))]
    return found


def _grid(n_panels: int) -> tuple[int, int]:
    """(rows, columns): one row up to ``COLUMNS + 1`` panels (four: the PACBED patterns
    side by side), else rows of ``COLUMNS``."""
    n = max(1, int(n_panels))
    cols = n if n <= COLUMNS + 1 else COLUMNS
    return -(-n // cols), cols


def figure_size(n_panels: int) -> tuple[float, float]:
    """Inches (width, height) of a figure of ``n_panels`` panels (at least one)."""
    rows, cols = _grid(n_panels)
    return cols * PANEL_SIZE[0], rows * PANEL_SIZE[1] + TITLE_HEIGHT


def loop_figure(record, *, title: str = "", figure=None):
    """Draw ``record`` (a :class:`~bluestem.loop.LoopRecord` with at least one
    iteration) into ``figure`` (cleared; default a new pyplot-free one).

    Returns the figure; it is sized by :func:`figure_size` of its panels.
    """
    found = panels(record)
    if not found:
        raise ValueError(f"loop {record.uid}: nothing to draw (no iteration recorded, or "
                         "no number in its measurement's values)")  # fmt: skip
    size = figure_size(len(found))
    if figure is None:
        from matplotlib.figure import Figure

        figure = Figure(figsize=size, layout="constrained")
    else:
        figure.clear()
        figure.set_size_inches(*size)
    rows, cols = _grid(len(found))
    latest = record.iterations[-1]
    for i, (_name, draw) in enumerate(found):
        draw(figure.add_subplot(rows, cols, i + 1), record, latest)
    figure.suptitle(title or f"closed loop {record.uid[:8]}: iteration {latest.iteration}, "
                    f"{latest.decision}")  # fmt: skip
    return figure
