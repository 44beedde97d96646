"""What the notifier tells operators: an event with a severity."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = ["Event", "Severity"]


class Severity(IntEnum):
    """How urgent an event is (the numbers are :mod:`logging`'s levels)."""

    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50

    @classmethod
    def parse(cls, value: Any, name: str = "severity") -> Severity:
        """A severity from its name (any case) or itself; ValueError naming the
        allowed names otherwise."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        allowed = ", ".join(m.lower() for m in cls.__members__)
        raise ValueError(f"{name}={value!r}: allowed one of {allowed}")


@dataclass(frozen=True)
class Event:
    """One thing an operator should hear about.

    ``kind`` names what happened (``run_failed``, ``dropped_frames``, ``suspended``,
    ``checksum_error``, ``catalog_unreachable``, ``disk_low``, ``queue_finished`` ...),
    ``message`` says it in one line, ``details`` carries what a script may want (run uid,
    counts).
    """

    kind: str
    severity: Severity
    message: str
    time: float = field(default_factory=time.time)
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready (the webhook's body)."""
        return {
            "kind": self.kind,
            "severity": self.severity.name.lower(),
            "message": self.message,
            "time": self.time,
            "details": dict(self.details),
        }

    def line(self) -> str:
        """``SEVERITY kind: message`` (a log line, a mail subject)."""
        return f"{self.severity.name} {self.kind}: {self.message}"
