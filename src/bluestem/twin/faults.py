"""Detector faults to inject: frames never delivered, frames delivered late."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["FaultSchedule"]


def _index(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"bad frame index {text!r} in fault spec {spec!r}") from None
    if value < 0:
        raise ValueError(f"frame index must be >= 0, got {value} in fault spec {spec!r}")
    return value


@dataclass(frozen=True)
class FaultSchedule:
    """Frames the simulated detector drops or delivers late.

    The twin only carries the schedule; the IOC acts on it.

    Parameters
    ----------
    dropped : frozenset of int
        Flat frame indices the detector never delivers.
    late : Mapping of int to float
        Flat frame index to the extra delay (s) before it is delivered.
    """

    dropped: frozenset[int] = frozenset()
    late: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        dropped = frozenset(int(i) for i in self.dropped)
        if any(i < 0 for i in dropped):
            raise ValueError(f"dropped indices must be >= 0, got {sorted(dropped)}")
        late = {int(k): float(v) for k, v in dict(self.late).items()}
        for index, delay in late.items():
            if index < 0:
                raise ValueError(f"late frame index must be >= 0, got {index}")
            if not (math.isfinite(delay) and delay >= 0):
                raise ValueError(f"late delay must be a finite time >= 0 s, got {delay!r}")
        object.__setattr__(self, "dropped", dropped)
        object.__setattr__(self, "late", MappingProxyType(late))

    def __hash__(self) -> int:
        return hash((self.dropped, tuple(sorted(self.late.items()))))

    def __bool__(self) -> bool:
        return bool(self.dropped or self.late)

    @classmethod
    def parse(cls, spec: str) -> FaultSchedule:
        """Parse a fault spec.

        Grammar: clauses separated by ``;``, each ``drop=I[,I...]`` or
        ``late=I:SECONDS[,I:SECONDS...]``; ``I`` is a flat frame index or an inclusive
        range ``A-B``. Example: ``"drop=5,17,300-302;late=40:0.2"``. An empty spec is no
        fault.

        Raises
        ------
        ValueError
            On an unknown clause, a bad index, range or delay.
        """
        if not isinstance(spec, str):
            raise ValueError(f"fault spec must be a string, got {spec!r}")
        dropped: set[int] = set()
        late: dict[int, float] = {}
        for clause in filter(None, (c.strip() for c in spec.split(";"))):
            name, sep, body = clause.partition("=")
            name = name.strip()
            if not sep or name not in ("drop", "late") or not body.strip():
                raise ValueError(
                    f"bad fault clause {clause!r} in {spec!r}: expected drop=I,... or "
                    "late=I:SECONDS,..."
                )
            for item in (i.strip() for i in body.split(",")):
                if name == "drop":
                    first, dash, last = item.partition("-")
                    lo = _index(first, spec)
                    hi = _index(last, spec) if dash else lo
                    if hi < lo:
                        raise ValueError(f"empty range {item!r} in fault spec {spec!r}")
                    dropped.update(range(lo, hi + 1))
                else:
                    index, colon, seconds = item.partition(":")
                    if not colon:
                        raise ValueError(
                            f"late item {item!r} needs INDEX:SECONDS in fault spec {spec!r}"
                        )
                    try:
                        delay = float(seconds)
                    except ValueError:
                        raise ValueError(f"bad delay {seconds!r} in fault spec {spec!r}") from None
                    if not (math.isfinite(delay) and delay >= 0):
                        raise ValueError(
                            f"late delay must be a finite time >= 0 s, got {seconds!r} in {spec!r}"
                        )
                    late[_index(index, spec)] = delay
        return cls(dropped=frozenset(dropped), late=late)

    def to_spec(self) -> str:
        """The spec string that parses back to this schedule."""
        parts = []
        if self.dropped:
            parts.append("drop=" + ",".join(str(i) for i in sorted(self.dropped)))
        if self.late:
            parts.append("late=" + ",".join(f"{i}:{d!r}" for i, d in sorted(self.late.items())))
        return ";".join(parts)
