"""LoopView: a bluesky callback that watches closed loops while they run.

A closed loop (:func:`bluestem.plans.closed_loop`) opens one **umbrella** run (start
document ``closed_loop.role == "umbrella"``) and writes one event per iteration to its
``iterations`` stream; its acquisitions are ordinary runs, interleaved with it. This
callback keeps the umbrella runs' documents, decodes them as ``bluestem loop show``
does (:func:`bluestem.loop.read_loop`) and, at each iteration event:

- prints a progress line: iteration, a bar of the budget, the estimate with its
  uncertainty, the loop's decision and the agent's words;
- draws the loop's figure (:func:`bluestem.callbacks.loop_figures.loop_figure`): the
  estimates against the iteration and what the measurement carries (A1, the PACBED fit
  and patterns, ...), in a window, or, headless, as PNGs: one per iteration
  (``loop-<uid8>-it<NN>.png``) and ``loop-<uid8>-latest.png`` replaced each time.

Everything comes from the documents, never from a device: every other run (the
acquisitions, a plain raster) passes through untouched.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bluestem.callbacks.loop_figures import goal_label, loop_figure, panels, value_units

__all__ = ["LoopView", "estimate_text", "progress_line"]

log = logging.getLogger(__name__)

ITERATIONS = "iterations"  # bluestem.loop.record.ITERATIONS_STREAM (imported lazily)


def _tag(uid: str) -> str:
    return str(uid)[:8]


def estimate_text(analysis: dict, info: dict) -> str:
    """The measurement's numeric values with their uncertainties, in display units
    (``c1=+1.2±0.5 nm a1=3.4±0.6 nm``); ``-`` when it has none."""
    parts = []
    unc = analysis.get("uncertainties") or {}
    for name, (factor, unit) in value_units(analysis, info).items():
        text = f"{name}={float(analysis['values'][name]) * factor:.4g}"
        err = unc.get(name)
        if isinstance(err, int | float) and not isinstance(err, bool) and math.isfinite(err):
            text += f"±{float(err) * abs(factor):.2g}"
        parts.append(text + (f" {unit}" if unit else ""))
    return "  ".join(parts) or "-"


def progress_line(record, row, width: int = 20) -> str:
    """One iteration of a loop as a line: ``closed loop <goal>: iteration <i> [bar] n/N
    <estimate> -> <decision> (<the agent's decision>)``."""
    info = record.info
    budget = (info.get("budget") or {}).get("max_iterations")
    done = row.iteration + 1
    bar = ""
    if isinstance(budget, int) and budget > 0:
        filled = round(width * min(done / budget, 1.0))
        bar = f"[{'#' * filled}{'-' * (width - filled)}] {done}/{budget}  "
    why = row.report.get("decision") if isinstance(row.report, dict) else None
    return (f"closed loop {goal_label(info)}: iteration {row.iteration} {bar}"
            f"{estimate_text(row.analysis, info)}  -> {row.decision}"
            + (f" ({why})" if isinstance(why, str) and why else ""))  # fmt: skip


@dataclass
class _Loop:
    """One umbrella run being watched: its documents and what was shown of it."""

    docs: list = field(default_factory=list)
    shown: int = 0  # iterations printed
    figure: Any = None


class LoopView:
    """Bluesky callback showing each closed loop's iterations: a progress line and a
    figure of the current estimate (see the module docstring).

    Parameters
    ----------
    progress : bool
        Print a line at each iteration (and at the loop's start and end).
    figures : bool
        Draw the loop's figure at each iteration.
    out_dir : path, optional
        Where the PNGs go (headless or not); required when headless with figures.
    headless : bool, optional
        Draw without a window (pyplot-free) and save PNGs. Default: True when
        matplotlib's backend is non-interactive (Agg and the file backends).
    stream : file, optional
        Where the lines go (default ``sys.stderr``, like the progress bar).
    dpi : float
        Resolution of the PNGs, 10..1200 (default 100).
    width : int
        Characters of the bar, 5..200.

    Attributes
    ----------
    lines : list of str
        Every line printed.
    saved : list of pathlib.Path
        Every PNG written (per-iteration files and each "latest" rewrite).
    records : dict
        Umbrella uid -> its latest :class:`bluestem.loop.LoopRecord` (kept after the loop).
    error : Exception or None
        The last error swallowed (a display never stops a run).

    Raises
    ------
    ValueError
        A bad parameter, naming the value and what is allowed.
    """

    def __init__(
        self,
        *,
        progress: bool = True,
        figures: bool = True,
        out_dir: str | os.PathLike | None = None,
        headless: bool | None = None,
        stream: TextIO | None = None,
        dpi: float = 100,
        width: int = 20,
    ) -> None:
        for key, value in (("progress", progress), ("figures", figures)):
            if not isinstance(value, bool):
                raise ValueError(f"{key}={value!r}: allowed True or False")
        if headless is not None and not isinstance(headless, bool):
            raise ValueError(f"headless={headless!r}: allowed True, False or None (auto)")
        if out_dir is not None and (not isinstance(out_dir, str | os.PathLike)
                                    or not os.fspath(out_dir)):  # fmt: skip
            raise ValueError(f"out_dir={out_dir!r}: allowed a directory path or None")
        if isinstance(dpi, bool) or not isinstance(dpi, int | float) or not 10 <= dpi <= 1200:
            raise ValueError(f"dpi={dpi!r}: allowed a number 10..1200")
        if isinstance(width, bool) or not isinstance(width, int) or not 5 <= width <= 200:
            raise ValueError(f"width={width!r}: allowed an integer 5..200")
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise ValueError(f"stream={stream!r}: allowed a text file (with write) or None")
        if figures and headless is None:
            from bluestem.callbacks.live_images import _is_headless

            headless = _is_headless()
        if figures and headless and out_dir is None:
            raise ValueError("out_dir=None: LoopView is headless (non-interactive matplotlib "
                             "backend or headless=True) and needs out_dir=DIR for its "
                             "PNGs; or figures=False")  # fmt: skip
        self.progress, self.figures, self.headless = progress, figures, bool(headless)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.stream, self.dpi, self.width = stream, float(dpi), width
        self.lines: list[str] = []
        self.saved: list[Path] = []
        self.records: dict[str, Any] = {}
        self.error: Exception | None = None
        self._loops: dict[str, _Loop] = {}
        self._descriptors: dict[str, tuple[str, str]] = {}  # uid -> (umbrella, stream)

    def __call__(self, name: str, doc: dict) -> None:
        try:
            if name == "start":
                self._start(doc)
            elif name == "descriptor":
                self._descriptor(doc)
            elif name in ("event", "event_page"):
                self._event(name, doc)
            elif name == "stop":
                self._stop(doc)
        except Exception as exc:  # a display never stops a run
            if type(exc) is not type(self.error):  # once per kind of failure
                log.exception("LoopView failed on a %s document", name)
            self.error = exc

    # -- documents -----------------------------------------------------------------------

    def _start(self, doc: dict) -> None:
        info = doc.get("closed_loop")
        if not isinstance(info, dict) or info.get("role") != "umbrella":
            return  # an acquisition, or any other run: not ours
        self._loops[doc["uid"]] = _Loop(docs=[("start", doc)])
        budget = (info.get("budget") or {}).get("max_iterations", "?")
        agent = str((info.get("agent") or {}).get("class", "?")).rpartition(".")[2]
        settings = ", ".join(info.get("settings") or []) or "none"
        self._say(f"closed loop {goal_label(info)}: started {_tag(doc['uid'])} (agent "
                  f"{agent}, budget {budget} iteration(s), settings {settings})")  # fmt: skip

    def _descriptor(self, doc: dict) -> None:
        loop = self._loops.get(doc.get("run_start"))
        if loop is not None:
            loop.docs.append(("descriptor", doc))
            self._descriptors[doc["uid"]] = (doc["run_start"], doc.get("name", ""))

    def _event(self, name: str, doc: dict) -> None:
        found = self._descriptors.get(doc.get("descriptor"))
        if found is None:
            return
        uid, stream = found
        loop = self._loops[uid]
        loop.docs.append((name, doc))
        if stream != ITERATIONS:
            return
        record = self._record(uid, loop)
        new = record.iterations[loop.shown :]
        loop.shown = len(record.iterations)
        for row in new:
            self._say(progress_line(record, row, self.width))
        if new and self.figures:
            self._draw(loop, record)

    def _stop(self, doc: dict) -> None:
        uid = doc.get("run_start")
        loop = self._loops.get(uid)
        if loop is None:
            return
        loop.docs.append(("stop", doc))
        try:
            record = self._record(uid, loop)
            reason = f" ({doc['reason']})" if doc.get("reason") else ""
            self._say(f"closed loop {goal_label(record.info)}: {doc.get('exit_status', '?')}"
                      f"{reason}, {len(record.iterations)} iteration(s), {_tag(uid)}")  # fmt: skip
            if record.failure:
                f = record.failure
                self._say(f"  failure at iteration {f.get('iteration')}, {f.get('stage')}: "
                          f"{f.get('error')}")  # fmt: skip
        finally:
            self._loops.pop(uid, None)
            self._descriptors = {k: v for k, v in self._descriptors.items() if v[0] != uid}

    def _record(self, uid: str, loop: _Loop):
        from bluestem.loop import read_loop

        record = read_loop(loop.docs)
        self.records[uid] = record
        return record

    # -- output --------------------------------------------------------------------------

    def _say(self, line: str) -> None:
        self.lines.append(line)
        if self.progress:
            out = self.stream or sys.stderr
            out.write(line + "\n")
            out.flush()

    def _draw(self, loop: _Loop, record) -> None:
        if not panels(record):
            return  # nothing numeric measured (yet): the line says it all
        row = record.iterations[-1]
        budget = (record.info.get("budget") or {}).get("max_iterations", "?")
        title = (f"closed loop {_tag(record.uid)}: {goal_label(record.info, 60)}: iteration "
                 f"{row.iteration} ({row.iteration + 1}/{budget}), {row.decision}")  # fmt: skip
        if self.headless:
            figure = loop_figure(record, title=title)  # pyplot-free: dropped after saving
        else:
            loop.figure = loop_figure(record, title=title, figure=self._window(loop))
            loop.figure.canvas.draw_idle()
            loop.figure.canvas.flush_events()
            figure = loop.figure
        if self.out_dir is not None:
            self._save(figure, record.uid, row.iteration)

    def _window(self, loop: _Loop):
        import matplotlib.pyplot as plt

        if loop.figure is None or not plt.fignum_exists(loop.figure.number):
            loop.figure = plt.figure(layout="constrained")  # the user may have closed it
            loop.figure.show()
        return loop.figure

    def _save(self, figure, uid: str, iteration: int) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tag = _tag(uid)
        path = self.out_dir / f"loop-{tag}-it{iteration:02d}.png"
        figure.savefig(path, dpi=self.dpi, facecolor="white")
        latest = self.out_dir / f"loop-{tag}-latest.png"
        tmp = latest.with_name(f".{latest.name}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, latest)  # a viewer never sees half a file
        self.saved += [path, latest]
