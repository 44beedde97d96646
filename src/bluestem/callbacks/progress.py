"""A progress bar for scans: frames, rate, ETA and dropped frames, from the documents.

Frames are counted from ``stream_datum`` documents (each covers ``stop - start`` indices of
the stream; one index is one scan row of ``nx`` frames in a fly raster, one frame in a
step scan: the per-index frame count comes from the descriptor's data-key shape). The
total is the product of the start document's ``scan.shape``. Dropped frames come from
each detector's ``hdf.dropped_frames`` signal (``HDF1:DroppedFrames_RBV``), read when a
datum arrives (one CA read per block of rows, not per frame).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["ProgressBar"]


def _fmt_time(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # NaN / inf: unknown
        return "--:--"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """Bluesky callback printing scan progress.

    Parameters
    ----------
    detectors : sequence of devices, optional
        Devices with ``hdf.dropped_frames`` (PixelatedDetector) whose dropped-frame
        counters are shown.
    stream : file, optional
        Where to print (default ``sys.stderr``).  On a terminal one line is redrawn in
        place (``\\r``) at most every ``interval`` s; otherwise a plain line is printed at
        most every ``plain_interval`` s, plus a final line at the stop document.
    width : int
        Bar width in characters (terminal only).

    Attributes
    ----------
    frames, total, dropped : int
        The current run's counts (kept after the run for inspection).
    """

    def __init__(
        self,
        detectors=(),
        *,
        stream: TextIO | None = None,
        width: int = 30,
        interval: float = 0.2,
        plain_interval: float = 1.0,
    ):
        self.detectors = list(detectors)
        self.stream = stream
        self.width = width
        self.interval = interval
        self.plain_interval = plain_interval
        self.frames = self.total = self.dropped = 0
        self._per_index: dict[str, int] = {}
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
        self._t0 = self._last = time.monotonic()
        self._active = True

    def _descriptor(self, doc: dict) -> None:
        for key in doc.get("data_keys", {}).values():
            if key.get("external") == "STREAM:":
                shape = key.get("shape") or []
                per = 1
                for n in shape[:-2]:  # the last two axes are one frame
                    per *= int(n)
                self._per_index[doc["uid"]] = per
                return

    def _stream_datum(self, doc: dict) -> None:
        per = self._per_index.get(doc.get("descriptor"), 1)
        idx = doc["indices"]
        self.frames += (idx["stop"] - idx["start"]) * per
        self._read_dropped()
        self._show(final=False)

    def _stop(self, doc: dict) -> None:
        if not self._active:
            return
        self._read_dropped()
        self._show(final=True, status=doc.get("exit_status", "?"))
        self._active = False

    def _read_dropped(self) -> None:
        total = 0
        for det in self.detectors:
            try:
                total += int(det.hdf.dropped_frames.get(use_monitor=False))
            except Exception:  # a progress bar never stops a run
                return
        self.dropped = total

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
