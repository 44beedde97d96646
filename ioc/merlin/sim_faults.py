"""Faults the Merlin simulator injects into its data stream (``--faults``).

Syntax: entries separated by ``;``, each ``kind=value`` with an optional ``@K`` (only in
the K-th acquisition since the simulator started, from 1; without it, in every one):

``drop=5,17``
    frames 5 and 17 are never sent (the frame numbers jump: 4, 6, ...).
``stall=40:0.5``
    wait 0.5 s before sending frame 40.
``disconnect=100``
    close the data connection before frame 100 (the acquisition ends there).
``truncate=60``
    send the first half of frame 60's message, then close the data connection.
``corrupt=30``
    frame 30's header tag is ``MQ1`` garbled to ``MQX`` (the framing stays intact).
``badlength=30``
    frame 30's length field is one byte too long (a framing error).

Frame numbers are the detector's (from 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["KINDS", "SimFaults"]

KINDS = ("drop", "stall", "disconnect", "truncate", "corrupt", "badlength")


@dataclass(frozen=True)
class SimFaults:
    """The faults of one acquisition: frame number -> what happens to it."""

    drop: frozenset[int] = frozenset()
    stall: dict[int, float] = field(default_factory=dict)
    disconnect: int | None = None
    truncate: int | None = None
    corrupt: frozenset[int] = frozenset()
    badlength: frozenset[int] = frozenset()

    @property
    def any(self) -> bool:
        return bool(self.drop or self.stall or self.disconnect or self.truncate
                    or self.corrupt or self.badlength)  # fmt: skip

    @staticmethod
    def parse(text: str, acquisition: int) -> SimFaults:
        """The faults of acquisition ``acquisition`` (from 1) in ``text``.

        Raises
        ------
        ValueError
            Naming the entry and what is allowed, for any entry that is not valid.
        """
        drop, stall, corrupt, badlength = set(), {}, set(), set()
        disconnect = truncate = None
        for entry in filter(None, (e.strip() for e in (text or "").split(";"))):
            body, _, only = entry.partition("@")
            kind, eq, value = body.partition("=")
            kind = kind.strip()
            if kind not in KINDS or not eq:
                raise ValueError(f"--faults entry {entry!r}: allowed kinds {', '.join(KINDS)} "
                                 "as kind=value[@acquisition]")  # fmt: skip
            if only and (not only.strip().isdigit() or int(only) < 1):
                raise ValueError(f"--faults entry {entry!r}: @{only} is not an acquisition "
                                 "number; allowed an integer >= 1")  # fmt: skip
            if only and int(only) != acquisition:
                continue
            try:
                if kind == "stall":
                    frame, _, seconds = value.partition(":")
                    stall[_frame(frame)] = float(seconds)
                    if not 0 <= stall[_frame(frame)] <= 3600:
                        raise ValueError("stall seconds")
                elif kind in ("drop", "corrupt", "badlength"):
                    target = {"drop": drop, "corrupt": corrupt, "badlength": badlength}[kind]
                    target.update(_frame(v) for v in value.split(","))
                elif kind == "disconnect":
                    disconnect = _frame(value)
                else:
                    truncate = _frame(value)
            except ValueError:
                raise ValueError(
                    f"--faults entry {entry!r}: allowed frame numbers >= 1 (drop=5,17, "
                    "corrupt=N, badlength=N, disconnect=N, truncate=N) and stall=N:SECONDS "
                    "with 0 <= SECONDS <= 3600"
                ) from None
        return SimFaults(frozenset(drop), stall, disconnect, truncate, frozenset(corrupt),
                         frozenset(badlength))  # fmt: skip


def _frame(text: str) -> int:
    number = int(text.strip())
    if number < 1:
        raise ValueError(text)
    return number
