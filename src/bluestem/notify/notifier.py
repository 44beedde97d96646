"""The notifier: a bluesky callback that turns documents into operator notifications,
and the place other parts of a session report to (``notify(event)``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .events import Event, Severity
from .sinks import LogFileSink, Sink, SmtpSink, WebhookSink

__all__ = ["NOTIFY_KEYS", "Notifier"]

logger = logging.getLogger(__name__)

#: The inventory's ``notify:`` keys.
NOTIFY_KEYS = ("log", "webhook", "smtp", "dropped_frames")
_SINKS = {"log": LogFileSink, "webhook": WebhookSink, "smtp": SmtpSink}
# The dropped-frame counter's monitor stream (bluestem.plans.monitor.CounterMonitor).
_DROPPED_STREAM = "_dropped_frames_monitor"


class Notifier:
    """Send :class:`Event` s to ``sinks``; subscribed to a RunEngine, also the events the
    documents show.

    From the documents: a run that ends ``fail`` (ERROR, ``run_failed``) or ``abort``
    (WARNING, ``run_aborted``), a run suspended (WARNING, ``suspended``, with the
    suspender's reason), paused or resumed (INFO), and a run whose dropped-frame count passes
    ``dropped_frames`` (WARNING, ``dropped_frames``, once per run). From the catalogue
    writer (:meth:`catalog_gave_up`): ``catalog_unreachable`` (WARNING).

    Parameters
    ----------
    sinks : sequence of Sink
    dropped_frames : int
        Dropped frames in one run above which operators are told; default 0 (any).
    """

    def __init__(self, sinks: Sequence[Sink] = (), *, dropped_frames: int = 0):
        if isinstance(dropped_frames, bool) or not isinstance(dropped_frames, int) or (
                dropped_frames < 0):  # fmt: skip
            raise ValueError(f"notify.dropped_frames={dropped_frames!r}: allowed an "
                             "integer >= 0")  # fmt: skip
        self.sinks = list(sinks)
        self.dropped_frames = dropped_frames
        self.events: list[Event] = []  # everything notified in this session
        self._plans: dict[str, str] = {}
        self._streams: dict[str, tuple[str, str]] = {}  # descriptor -> (run, stream)
        self._told_dropped: set[str] = set()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Notifier:
        """From the inventory's ``notify:`` mapping (see docs/session.md)."""
        config = dict(config or {})
        unknown = sorted(set(config) - set(NOTIFY_KEYS))
        if unknown:
            allowed = ", ".join(NOTIFY_KEYS)
            raise ValueError(f"notify: unknown key(s) {unknown}; allowed: {allowed}")
        sinks = []
        for key, make in _SINKS.items():
            if config.get(key) is None:
                continue
            entry = config[key]
            if key == "log" and isinstance(entry, str):
                entry = {"path": entry}
            if key == "webhook" and isinstance(entry, str):
                entry = {"url": entry}
            if not isinstance(entry, Mapping):
                raise ValueError(f"notify.{key}={entry!r}: allowed a mapping")
            try:
                sinks.append(make(**entry))
            except TypeError as exc:
                raise ValueError(f"notify.{key}: {exc}") from None
        return cls(sinks, dropped_frames=config.get("dropped_frames", 0))

    def notify(self, event: Event) -> None:
        """Send ``event`` to every sink (each filters and rate-limits on its own)."""
        self.events.append(event)
        logger.log(int(event.severity), "%s", event.line())
        for sink in self.sinks:
            sink(event)

    def __call__(self, name: str, doc: dict) -> None:
        try:
            self._document(name, doc)
        except Exception as exc:  # a notification never stops a run
            logger.error("notifier: %s document not handled: %s: %s", name,
                         type(exc).__name__, exc)  # fmt: skip

    def _document(self, name: str, doc: dict) -> None:
        if name == "start":
            self._plans[doc["uid"]] = str(doc.get("plan_name", "?"))
        elif name == "descriptor":
            self._streams[doc["uid"]] = (doc["run_start"], doc.get("name", ""))
        elif name in ("event", "event_page"):
            run, stream = self._streams.get(doc["descriptor"], ("", ""))
            if stream == "interruptions":
                texts = doc["data"].get("interruption", [])
                for text in texts if isinstance(texts, list) else [texts]:
                    self._interruption(run, str(text))
                return
            if stream.endswith(_DROPPED_STREAM) and run not in self._told_dropped:
                values = [v for key, v in doc["data"].items() if key.endswith("dropped_frames")]
                flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
                if flat and max(flat) > self.dropped_frames:
                    self._told_dropped.add(run)
                    self.notify(Event("dropped_frames", Severity.WARNING,
                                      f"{self._plans.get(run, 'run')} {run[:8]}: {max(flat)} "
                                      f"frames dropped (threshold {self.dropped_frames})",
                                      details={"run": run, "dropped": max(flat)}))  # fmt: skip
        elif name == "stop":
            run, status = doc["run_start"], doc.get("exit_status")
            plan = self._plans.pop(run, "run")
            self._told_dropped.discard(run)
            if status in ("fail", "abort"):
                kind = "run_failed" if status == "fail" else "run_aborted"
                severity = Severity.ERROR if status == "fail" else Severity.WARNING
                self.notify(Event(kind, severity,
                                  f"{plan} {run[:8]} {status}: {doc.get('reason') or '?'}",
                                  details={"run": run, "exit_status": status}))  # fmt: skip

    def _interruption(self, run: str, text: str) -> None:
        """The run's ``interruptions`` stream: a pause (Ctrl-C, ``RE.request_pause``), a
        suspension (its reason) or a resume."""
        what = f"{self._plans.get(run, 'run')} {run[:8]}"
        if text == "pause":
            event = Event("paused", Severity.INFO, f"{what} paused by the operator")
        elif text.startswith("resume"):
            event = Event("resumed", Severity.INFO, f"{what} resumed ({text})")
        else:
            event = Event("suspended", Severity.WARNING, f"{what} suspended: {text}")
        self.notify(Event(event.kind, event.severity, event.message,
                          details={"run": run, "interruption": text}))  # fmt: skip

    def catalog_gave_up(self, run: str, reason: str) -> None:
        """The catalogue writer gave up on ``run`` (the catalogue is unreachable or
        refused it): WARNING ``catalog_unreachable``; the journal holds the run."""
        self.notify(Event("catalog_unreachable", Severity.WARNING,
                          f"run {run[:8]} not in the catalogue ({reason}); the journal "
                          "holds it: bluestem sync uploads it", details={"run": run}))  # fmt: skip

    def close(self) -> None:
        for sink in self.sinks:
            if hasattr(sink, "close"):
                sink.close()
