"""The record of a closed loop, and reading it back.

One umbrella run per loop (its start document's ``closed_loop`` says who decided and
to what end), one event per iteration in its ``iterations`` stream, at most one event in
``failure`` and in ``restore``, and every acquisition its own run whose start document
carries ``closed_loop = {"uid": umbrella uid, "iteration": i}``. Structured values are
JSON strings in the events (a catalogue table holds numbers and strings); numbers that
one plots (the settings as read back) are columns of their own. See docs/loop.md.

This module composes the events' data and reads them back from a run's documents (the
catalogue's ``run.documents()`` or a journal file); the plan that emits them is
:func:`bluestem.plans.closed_loop`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FAILURE_STREAM",
    "ITERATIONS_STREAM",
    "RESERVED_KEYS",
    "RESTORE_STREAM",
    "IterationRow",
    "LoopRecord",
    "LoopResult",
    "failure_data",
    "iteration_data",
    "read_loop",
    "replay_decisions",
    "restore_data",
    "to_json",
    "to_plain",
]

ITERATIONS_STREAM = "iterations"
FAILURE_STREAM = "failure"
RESTORE_STREAM = "restore"

#: Data keys of every ``iterations`` event (a setting may not be named like one).
RESERVED_KEYS = (
    "iteration", "requested", "readback", "inputs", "method", "analysis", "report",
    "decision",
)  # fmt: skip

CONVERGED = "converged"
CONTINUE = "continue"
BUDGET = "budget exhausted"


def to_plain(value: Any) -> Any:
    """A JSON-able copy: numpy scalars and arrays become numbers and lists, tuples
    lists, mapping keys strings; a non-finite float is refused.

    Raises
    ------
    ValueError
        A value JSON cannot hold (an object, NaN or infinity), naming its place.
    """
    return _plain(value, "value")


def _plain(value: Any, where: str) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}={value!r}: allowed a finite number (JSON has no NaN)")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"{where}={value!r}: allowed numbers, strings, lists and mappings")


def to_json(value: Any) -> str:
    """``value`` (see :func:`to_plain`) as a compact JSON string, keys sorted."""
    return json.dumps(to_plain(value), sort_keys=True, separators=(",", ":"))


def iteration_data(
    *,
    iteration: int,
    requested: Mapping,
    readback: Mapping,
    inputs: Sequence[str],
    measurement: Mapping,
    report: Mapping,
    decision: str,
) -> dict[str, Any]:
    """The data of one ``iterations`` event: the structured values as JSON strings and
    each setting's read-back value as its own column."""
    data: dict[str, Any] = {
        "iteration": int(iteration),
        "requested": to_json(requested),
        "readback": to_json(readback),
        "inputs": to_json(list(inputs)),
        "method": str(measurement.get("method", "")),
        "analysis": to_json(measurement),
        "report": to_json(report),
        "decision": str(decision),
    }
    data.update({name: to_plain(value) for name, value in readback.items()})
    return data


def failure_data(*, iteration: int, stage: str, error: str, requested: Mapping,
                 inputs: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """The data of the ``failure`` event: where (iteration, stage) and why."""
    return {"iteration": int(iteration), "stage": str(stage), "error": str(error),
            "requested": to_json(requested), "inputs": to_json(list(inputs))}  # fmt: skip


def restore_data(*, requested: Mapping, readback: Mapping, error: str) -> dict[str, Any]:
    """The data of the ``restore`` event: the settings the loop started from, what they
    read back after the restore, and its error (``""``: restored)."""
    return {"requested": to_json(requested), "readback": to_json(readback),
            "ok": not error, "error": str(error)}  # fmt: skip


@dataclass
class LoopResult:
    """What :func:`bluestem.plans.closed_loop` returns.

    Attributes
    ----------
    uid : str
        The umbrella run's uid (the loop's uid).
    converged : bool
    iterations : int
        Iterations recorded (acquisitions analysed).
    reason : str
        Why the loop ended (converged, budget exhausted, or the failure).
    acquisitions : list of str
        Every acquisition run's uid, in order.
    report : dict
        The agent's last report.
    decisions : list of dict
        The changes the agent requested, one per iteration.
    """

    uid: str
    converged: bool = False
    iterations: int = 0
    reason: str = ""
    acquisitions: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    decisions: list[dict] = field(default_factory=list)


@dataclass
class IterationRow:
    """One ``iterations`` event, decoded."""

    iteration: int
    requested: dict
    readback: dict
    inputs: list[str]
    method: str
    analysis: dict
    report: dict
    decision: str
    time: float = 0.0


@dataclass
class LoopRecord:
    """A loop as its umbrella run's documents hold it (:func:`read_loop`)."""

    uid: str
    start: dict
    stop: dict | None
    iterations: list[IterationRow]
    failure: dict | None = None
    restore: dict | None = None

    @property
    def info(self) -> dict:
        """The start document's ``closed_loop``."""
        return dict(self.start.get("closed_loop") or {})


def _decode(data: Mapping, key: str, default: Any) -> Any:
    raw = data.get(key)
    if not isinstance(raw, str) or not raw:
        return default
    return json.loads(raw)


def _event_rows(name: str, doc: dict) -> Iterable[tuple[str, dict, float]]:
    """``(descriptor uid, data, time)`` of an event or of every event of a page."""
    if name == "event":
        yield doc["descriptor"], doc["data"], doc.get("time", 0.0)
    elif name == "event_page":
        keys = list(doc["data"])
        for i, t in enumerate(doc.get("time", [])):
            yield doc["descriptor"], {k: doc["data"][k][i] for k in keys}, t


def read_loop(documents: Iterable[tuple[str, dict]]) -> LoopRecord:
    """Decode a loop's umbrella run from its documents (in order).

    Raises
    ------
    ValueError
        The documents are not an umbrella run of a closed loop.
    """
    start = stop = None
    streams: dict[str, str] = {}  # descriptor uid -> stream name
    rows: list[IterationRow] = []
    failure = restore = None
    for name, doc in documents:
        if name == "start":
            start = doc
        elif name == "descriptor":
            streams[doc["uid"]] = doc.get("name", "")
        elif name == "stop":
            stop = doc
        for descriptor, data, t in _event_rows(name, doc):
            stream = streams.get(descriptor)
            if stream == ITERATIONS_STREAM:
                rows.append(IterationRow(
                    iteration=int(data["iteration"]),
                    requested=_decode(data, "requested", {}),
                    readback=_decode(data, "readback", {}),
                    inputs=_decode(data, "inputs", []),
                    method=str(data.get("method", "")),
                    analysis=_decode(data, "analysis", {}),
                    report=_decode(data, "report", {}),
                    decision=str(data.get("decision", "")),
                    time=float(t),
                ))  # fmt: skip
            elif stream == FAILURE_STREAM:
                failure = {**data, "requested": _decode(data, "requested", {}),
                           "inputs": _decode(data, "inputs", [])}  # fmt: skip
            elif stream == RESTORE_STREAM:
                restore = {**data, "requested": _decode(data, "requested", {}),
                           "readback": _decode(data, "readback", {})}  # fmt: skip
    info = (start or {}).get("closed_loop") or {}
    if start is None or info.get("role") != "umbrella":
        uid = start.get("uid") if start else None
        of = f"; it is acquisition {info.get('iteration')} of loop {info['uid']}" \
            if info.get("uid") else ""  # fmt: skip
        raise ValueError(f"run {uid}: not a closed loop's umbrella run (its start "
                         f"document's closed_loop.role is not 'umbrella'){of}")  # fmt: skip
    rows.sort(key=lambda r: r.iteration)
    return LoopRecord(uid=start["uid"], start=start, stop=stop, iterations=rows,
                      failure=failure, restore=restore)  # fmt: skip


def replay_decisions(agent, rows: Sequence[IterationRow]) -> list[dict]:
    """The decisions a fresh ``agent`` makes when shown the recorded measurements.

    For each recorded iteration: ``agent.suggest(1)`` (what it would have requested),
    then ``agent.ingest(readback, analysis)`` with what the record holds. The list equals
    the recorded ``requested`` values when the record is complete and the agent is the
    one that ran (same class and parameters; deterministic).
    """
    from bluestem.loop.agent import as_agent

    agent = as_agent(agent)
    decisions = []
    for row in rows:
        points = list(agent.suggest(1))
        decisions.append(to_plain(dict(points[0])) if points else None)
        agent.ingest(row.readback, row.analysis)
    return decisions
