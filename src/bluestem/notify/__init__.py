"""bluestem.notify — operators are told when something goes wrong (docs/session.md).

:class:`Notifier` (a bluesky callback, and ``notify(event)`` for everything else) sends
:class:`Event` s, each with a :class:`Severity`, to sinks: a rotating log file
(:class:`LogFileSink`), e-mail (:class:`SmtpSink`) and a webhook (:class:`WebhookSink`),
each with a minimum severity and a rate limit. The IOC's ``STATUS`` PV is the fourth
sink, kept by the IOC itself (docs/ioc.md). Nothing here runs at import.
"""

from .events import Event, Severity
from .notifier import NOTIFY_KEYS, Notifier
from .sinks import LogFileSink, Sink, SmtpSink, WebhookSink

__all__ = [
    "NOTIFY_KEYS",
    "Event",
    "LogFileSink",
    "Notifier",
    "Severity",
    "Sink",
    "SmtpSink",
    "WebhookSink",
]
