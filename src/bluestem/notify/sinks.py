"""Where notifications go: a rotating log file, e-mail over SMTP, a webhook.

Every sink has a minimum severity and a rate limit (at most ``per_hour`` events an hour;
the rest are counted and the next event that goes out says how many were held back), so a
fault that repeats cannot flood a mailbox. A sink that fails reports it in the log and
never raises: a notification must not stop a run.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import smtplib
import time
import urllib.request
from collections import deque
from email.message import EmailMessage
from pathlib import Path

from .events import Event, Severity

__all__ = ["LogFileSink", "Sink", "SmtpSink", "WebhookSink"]

logger = logging.getLogger(__name__)


class Sink:
    """Base: severity filter and rate limit around :meth:`send`.

    Parameters
    ----------
    min_severity : Severity or str
        Events below it are not sent.
    per_hour : int
        At most this many events an hour (a sliding window); 0: no limit.
    """

    name = "sink"

    def __init__(self, *, min_severity: Severity | str = Severity.WARNING, per_hour: int = 30):
        self.min_severity = Severity.parse(min_severity, f"{self.name}.min_severity")
        if isinstance(per_hour, bool) or not isinstance(per_hour, int) or per_hour < 0:
            raise ValueError(f"{self.name}.per_hour={per_hour!r}: allowed an integer >= 0")
        self.per_hour = per_hour
        self.sent = 0
        self.held_back = 0
        self.failures = 0
        self._times: deque[float] = deque()

    def __call__(self, event: Event) -> bool:
        """Send ``event`` if it is severe enough and the rate allows; True if sent."""
        if event.severity < self.min_severity:
            return False
        now = time.monotonic()
        while self._times and now - self._times[0] > 3600:
            self._times.popleft()
        if self.per_hour and len(self._times) >= self.per_hour:
            self.held_back += 1
            return False
        held, self.held_back = self.held_back, 0
        try:
            self.send(event, held_back=held)
        except Exception as exc:
            self.failures += 1
            logger.error("notification to %s failed: %s: %s (%s)", self.name,
                         type(exc).__name__, exc, event.line())  # fmt: skip
            return False
        self._times.append(now)
        self.sent += 1
        return True

    def send(self, event: Event, *, held_back: int) -> None:  # pragma: no cover
        raise NotImplementedError


def _text(event: Event, held_back: int) -> str:
    more = f" ({held_back} earlier notification(s) held back by the rate limit)"
    more = more if held_back else ""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time))
    return f"{when} {event.line()}{more}"


class LogFileSink(Sink):
    """Append each event as a line to a rotating log file (``max_bytes``, ``backups``)."""

    name = "log"

    def __init__(self, path, *, max_bytes: int = 1_000_000, backups: int = 5, **kw):
        kw.setdefault("min_severity", Severity.INFO)
        kw.setdefault("per_hour", 0)
        super().__init__(**kw)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )

    def send(self, event: Event, *, held_back: int) -> None:
        record = logging.LogRecord("bluestem.notify", int(event.severity), "", 0,
                                   _text(event, held_back), None, None)  # fmt: skip
        self._handler.emit(record)
        self._handler.flush()

    def close(self) -> None:
        self._handler.close()


class WebhookSink(Sink):
    """HTTP POST of the event as JSON (``Event.as_dict`` plus ``held_back``) to ``url``."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 5.0, **kw):
        super().__init__(**kw)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook.url={url!r}: allowed an http:// or https:// URL")
        self.url, self.timeout = url, float(timeout)

    def send(self, event: Event, *, held_back: int) -> None:
        body = json.dumps({**event.as_dict(), "held_back": held_back}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=self.timeout) as reply:
            if not 200 <= reply.status < 300:
                raise OSError(f"HTTP {reply.status} from {self.url}")


class SmtpSink(Sink):
    """E-mail over SMTP: the subject is the event's line, the body its details."""

    name = "smtp"

    def __init__(self, host: str, port: int = 25, *, sender: str, to, timeout: float = 10.0,
                 **kw):  # fmt: skip
        super().__init__(**kw)
        to = [to] if isinstance(to, str) else list(to or [])
        if not to or not all(isinstance(a, str) and "@" in a for a in to):
            raise ValueError(f"smtp.to={to!r}: allowed one or more e-mail addresses")
        if not isinstance(sender, str) or "@" not in sender:
            raise ValueError(f"smtp.sender={sender!r}: allowed an e-mail address")
        self.host, self.port, self.sender, self.to = host, int(port), sender, to
        self.timeout = float(timeout)

    def send(self, event: Event, *, held_back: int) -> None:
        mail = EmailMessage()
        mail["Subject"] = f"[bluestem] {event.line()}"[:200]
        mail["From"], mail["To"] = self.sender, ", ".join(self.to)
        mail.set_content(_text(event, held_back) + "\n\n" + json.dumps(event.as_dict(), indent=2))
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            smtp.send_message(mail)
