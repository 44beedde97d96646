"""A progress bar for scans: frames, rate, ETA and dropped frames, from the documents.

Frames are counted from ``stream_datum`` documents (each covers ``stop - start`` indices of
the stream; one index is one scan row of ``nx`` frames in a fly raster, one frame in a
step scan: the per-index frame count comes from the descriptor's data-key shape). The
total is the product of the start document's ``scan.shape``.

Dropped frames come from the documents too, never from Channel Access: a descriptor (of
any stream; the fly raster records the detector's ``HDF1:DroppedFrames_RBV`` as a monitor
stream) whose data keys end in ``dropped_frames`` (e.g. ``det_hdf_dropped_frames``)
declares a dropped-frame counter, and each of its events (or event pages) gives the
counter's latest value. The count shown is the sum over counters of each one's latest
value.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["DROPPED_SUFFIX", "ProgressBar"]

#: A data key ending in this is a dropped-frame counter (a monitor of the file writer's).
DROPPED_SUFFIX = "dropped_frames"


def _fmt_time(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # NaN / inf: unknown
        return "--:--"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """Bluesky callback printing scan progress.

    Every count comes from the documents (see the module docstring): frames from
    ``stream_datum``, the total from the start document's ``scan.shape``, dropped frames
    from the events of descriptors whose data keys end in ``dropped_frames``.

    Parameters
    ----------
    stream : file, optional
        Where to print (default ``sys.stderr``).  On a terminal one line is redrawn in
        place (``\\r``) at most every ``interval`` s; otherwise a plain line is printed at
        most every ``plain_interval`` s, plus a final line at the stop document.
    width : int
        Bar width in characters (terminal only).

    Attributes
    ----------
    frames, total, dropped : int
        The current run's counts (kept after the run for inspection); ``dropped`` is the
        sum of every dropped-frame counter's latest value.
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        width: int = 30,
        interval: float = 0.2,
        plain_interval: float = 1.0,
    ):
        self.stream = stream
        self.width = width
        self.interval = interval
        self.plain_interval = plain_interval
        self.frames = self.total = self.dropped = 0
        self._per_index: dict[str, int] = {}
        self._counters: dict[str, list[str]] = {}  # descriptor uid -> its dropped keys
        self._dropped: dict[str, int] = {}  # data key -> its latest value
        self._t0 = 0.0
        self._last = 0.0
        self._active = False

    @property
    def _out(self) -> TextIO:
        return self.stream or sys.stderr

    def _tty(self) -> bool:
        isatty = getattr(self._out, "isatty", None)
        return bool(isatty and isatty())

    def __call__(self, name: str, doc: dict) -> None:
        handler = getattr(self, f"_{name}", None)
        if handler is not None:
            handler(doc)

    def _start(self, doc: dict) -> None:
        shape = (doc.get("scan") or {}).get("shape") or []
        total = 1
        for n in shape:
            total *= int(n)
        self.total = total if shape else 0
        self.frames = self.dropped = 0
        self._per_index.clear()
        self._counters.clear()
        self._dropped.clear()
        self._t0 = self._last = time.monotonic()
        self._active = True

    def _descriptor(self, doc: dict) -> None:
        data_keys = doc.get("data_keys", {})
        counters = [k for k in data_keys if k.endswith(DROPPED_SUFFIX)]
        if counters:
            self._counters[doc["uid"]] = counters
        for key in data_keys.values():
            if key.get("external") == "STREAM:":
                shape = key.get("shape") or []
                per = 1
                for n in shape[:-2]:  # the last two axes are one frame
                    per *= int(n)
                self._per_index[doc["uid"]] = per
                return

    def _event(self, doc: dict) -> None:
        self._take_dropped(doc, doc.get("data", {}))

    def _event_page(self, doc: dict) -> None:
        data = doc.get("data", {})
        self._take_dropped(doc, {k: v[-1] for k, v in data.items() if len(v)})  # the latest

    def _take_dropped(self, doc: dict, data: dict) -> None:
        """The latest value of each dropped-frame counter of the event's descriptor."""
        keys = self._counters.get(doc.get("descriptor"), ())
        try:
            self._dropped.update({key: int(data[key]) for key in keys if key in data})
        except (TypeError, ValueError):  # a progress bar never stops a run
            return
        dropped = sum(self._dropped.values())
        if dropped != self.dropped:
            self.dropped = dropped
            self._show(final=False)

    def _stream_datum(self, doc: dict) -> None:
        per = self._per_index.get(doc.get("descriptor"), 1)
        idx = doc["indices"]
        self.frames += (idx["stop"] - idx["start"]) * per
        self._show(final=False)

    def _stop(self, doc: dict) -> None:
        if not self._active:
            return
        self._show(final=True, status=doc.get("exit_status", "?"))
        self._active = False

    def line(self, status: str | None = None) -> str:
        """The progress text (without bar): frames, rate, ETA, dropped."""
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        rate = self.frames / elapsed
        left = self.total - self.frames
        eta = left / rate if rate > 0 and self.total else float("nan")
        total = f"/{self.total:,}" if self.total else ""
        text = (f"{self.frames:,}{total} frames  {rate:,.0f} frames/s  "
                f"{'ETA ' + _fmt_time(eta) if status is None else _fmt_time(elapsed)}  "
                f"dropped {self.dropped}")  # fmt: skip
        return text if status is None else f"{text}  [{status}]"

    def _show(self, *, final: bool, status: str | None = None) -> None:
        now = time.monotonic()
        tty = self._tty()
        if not final and now - self._last < (self.interval if tty else self.plain_interval):
            return
        self._last = now
        text = self.line(status if final else None)
        if tty:
            frac = min(self.frames / self.total, 1.0) if self.total else 0.0
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            self._out.write(f"\r[{bar}] {frac:6.1%} {text}" + ("\n" if final else ""))
        else:
            self._out.write(text + "\n")
        self._out.flush()

    def summary(self) -> dict[str, Any]:
        """Frames, total, dropped and the mean rate of the last run."""
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        return {"frames": self.frames, "total": self.total, "dropped": self.dropped,
                "rate": self.frames / elapsed}  # fmt: skip
