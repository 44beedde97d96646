"""Closed loops: decide, set (verified), acquire, analyse, fit — until the goal is met or
the budget is spent (docs/loop.md).

One umbrella run per loop stays open, under a run key of its own (bluesky's multi-run
support), while each acquisition opens and closes its own ordinary run inside it; the
umbrella's ``iterations`` stream has one event per iteration. A loop that fails restores
the settings it started from and says why.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.preprocessors import set_run_key_wrapper
from bluesky.utils import Msg, MsgGenerator, RequestAbort, RequestStop

from bluestem.loop import ITERATIONS_STREAM, LoopResult, agent_info, as_agent, to_plain
from bluestem.loop.record import (
    BUDGET,
    CONTINUE,
    CONVERGED,
    FAILURE_STREAM,
    RESERVED_KEYS,
    RESTORE_STREAM,
    failure_data,
    iteration_data,
    restore_data,
)

from .raster import failure_reason

__all__ = ["MAX_ITERATIONS", "LoopDiverged", "closed_loop", "raw_file", "run_documents"]

logger = logging.getLogger(__name__)

#: The most iterations one loop may be given.
MAX_ITERATIONS = 10_000

Acquire = Callable[[dict, int, dict], MsgGenerator[tuple[Any, Mapping]]]


class LoopDiverged(RuntimeError):
    """The agent reported that the loop diverged (its report's ``diverged``)."""


class _Record:
    """A bluesky Readable of prepared values: one per stream of the umbrella run."""

    parent = None

    def __init__(self, name: str):
        self.name = name
        self.data: dict[str, Any] = {}

    def describe(self) -> dict:
        def dtype(v):
            if isinstance(v, bool):
                return "boolean"
            return "integer" if isinstance(v, int) else "number" if isinstance(v, float) \
                else "string"  # fmt: skip

        return {k: {"dtype": dtype(v), "shape": [], "source": f"closed_loop:{self.name}"}
                for k, v in self.data.items()}  # fmt: skip

    def read(self) -> dict:
        now = time.time()
        return {k: {"value": v, "timestamp": now} for k, v in self.data.items()}


def _check_settings(settings) -> dict[str, Any]:
    named: dict = {}
    if isinstance(settings, Mapping):
        named = dict(settings)
    elif isinstance(settings, Sequence) and not isinstance(settings, str):
        named = {getattr(d, "name", None): d for d in settings}
        if len(named) != len(settings):
            named = {}  # two devices of one name
    ok = bool(named) and all(
        isinstance(k, str) and k and k not in RESERVED_KEYS
        and callable(getattr(d, "set", None)) and callable(getattr(d, "read", None))
        for k, d in named.items()
    )  # fmt: skip
    if not ok:
        raise ValueError(
            f"settings={settings!r}: allowed a mapping {{name: settable device}} (e.g. "
            f"{{'mic_defocus': mic.defocus}}) or a list of named devices; names unique, "
            f"not one of {list(RESERVED_KEYS)}"
        )
    return named


def _check_plain(name: str, value: Any) -> Any:
    try:
        return to_plain(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def closed_loop(
    agent,
    acquire: Acquire,
    *,
    settings: Mapping[str, Any] | Sequence[Any],
    max_iterations: int,
    converged: Callable[[dict], bool],
    restore: bool = True,
    goal: str | Mapping | None = None,
    md: dict | None = None,
) -> MsgGenerator[LoopResult]:
    """Run a closed loop: one umbrella run, one acquisition run (or more) per iteration.

    Each iteration: the agent decides (``agent.suggest(1)``: ``{setting name: value}``
    changes), the changes are set with ``bps.mv`` (verified settings check their
    readback), every setting is read back, ``acquire`` takes and analyses the data, the
    agent ingests the measurement (``agent.ingest(readback, measurement)``) and reports;
    the iteration is an event of the umbrella's ``iterations`` stream. The loop ends when
    ``converged(report)`` is true or after ``max_iterations``.

    Parameters
    ----------
    agent : bluestem.loop.Agent or compatible
        See :func:`bluestem.loop.as_agent` (bluesky-adaptive optimizers too).
    acquire : callable
        ``acquire(readback, iteration, loop_md) -> plan`` returning
        ``(run uid or list of uids, measurement mapping)``. It runs its own run(s) and
        puts ``loop_md`` (``{"closed_loop": {"uid", "iteration", "role"}}``) in their
        start documents (e.g. ``raster(..., md={**md, **loop_md})``).
    settings : mapping or sequence
        ``{name: device}`` the agent may change (a list of devices: their names).
    max_iterations : int
        The budget, 1..10000 acquisitions.
    converged : callable
        ``converged(report) -> bool``.
    restore : bool
        On failure (and abort) set every setting back to its value at the start.
    goal : str or mapping, optional
        What the loop is for, recorded (``closed_loop.goal``).
    md : dict, optional
        Extra umbrella start-document metadata.

    Returns
    -------
    LoopResult
        The umbrella uid, whether it converged, the acquisitions and decisions.

    Raises
    ------
    ValueError
        A bad argument (before any message).
    LoopDiverged
        The agent reported ``diverged`` (after the record and the restore).
    """
    agent = as_agent(agent)
    if not callable(acquire):
        raise ValueError(f"acquire={acquire!r}: allowed a callable "
                         "acquire(readback, iteration, loop_md) returning a plan")  # fmt: skip
    devices = _check_settings(settings)
    if (isinstance(max_iterations, bool) or not isinstance(max_iterations, int)
            or not 1 <= max_iterations <= MAX_ITERATIONS):  # fmt: skip
        raise ValueError(f"max_iterations={max_iterations!r}: allowed an integer "
                         f"1..{MAX_ITERATIONS}")  # fmt: skip
    if not callable(converged):
        raise ValueError(f"converged={converged!r}: allowed a callable converged(report)")
    if not isinstance(restore, bool):
        raise ValueError(f"restore={restore!r}: allowed True or False")
    if goal is not None and not isinstance(goal, str | Mapping):
        raise ValueError(f"goal={goal!r}: allowed a string, a mapping or None")
    if md is not None and not isinstance(md, Mapping):
        raise ValueError(f"md={md!r}: allowed a mapping or None")
    info = {
        "role": "umbrella",
        "agent": _check_plain("agent parameters", agent_info(agent)),
        "goal": _check_plain("goal", goal),
        "budget": {"max_iterations": max_iterations},
        "settings": list(devices),
        "restore": restore,
    }
    meta = {
        "plan_name": "closed_loop",
        "plan_args": {
            "agent": info["agent"]["class"],
            "settings": list(devices),
            "max_iterations": max_iterations,
            "restore": restore,
        },
        "closed_loop": info,
        **_check_plain("md", dict(md or {})),
    }
    loop = _Loop(agent, acquire, devices, max_iterations, converged, restore)
    return (yield from loop.run(meta))


class _Loop:
    """One loop's state while it runs (the plan's messages are its generators)."""

    def __init__(self, agent, acquire, devices, budget, converged, restore):
        self.agent, self.acquire, self.devices = agent, acquire, devices
        self.budget, self.converged, self.restore = budget, converged, restore
        self.key = f"closed_loop-{uuid.uuid4()}"  # the umbrella's run key
        self.records = {s: _Record(s) for s in (ITERATIONS_STREAM, FAILURE_STREAM,
                                                 RESTORE_STREAM)}  # fmt: skip
        self.result = LoopResult(uid="")
        self.start_values: dict | None = None
        self.stage, self.iteration = "start", 0
        self.requested: dict = {}
        self.inputs: list[str] = []

    def _u(self, plan) -> MsgGenerator[Any]:
        """Messages of the umbrella run (its run key)."""
        return set_run_key_wrapper(plan, self.key)

    def run(self, meta: dict) -> MsgGenerator[LoopResult]:
        self.result.uid = yield from self._u(bps.open_run(meta))
        try:
            self.stage = "read"
            self.start_values = yield from self._read_settings()
            yield from self._iterate()
        except RequestAbort:
            if self.restore:
                yield from self._restore()
            raise  # the RunEngine closes the runs as aborted
        except RequestStop:
            raise  # a success: the settings stay where they are
        except Exception as exc:
            reason = failure_reason(exc)
            self.result.reason = reason
            yield from self._emit(FAILURE_STREAM, failure_data(
                iteration=self.iteration, stage=self.stage, error=reason,
                requested=self.requested, inputs=self.inputs))  # fmt: skip
            if self.restore:
                why = yield from self._restore()
                reason += f"; the restore failed too: {why}" if why else "; settings restored"
            yield from self._u(bps.close_run(exit_status="fail", reason=reason))
            raise
        yield from self._u(bps.close_run(exit_status="success", reason=self.result.reason))
        return self.result

    def _iterate(self) -> MsgGenerator[None]:
        for i in range(self.budget):
            self.iteration, self.requested, self.inputs = i, {}, []
            yield from bps.checkpoint()  # a deferred pause lands between iterations
            self.stage = "suggest"
            self.requested = self._decide()
            self.result.decisions.append(self.requested)
            self.stage = "set"
            if self.requested:
                yield from bps.mv(*[x for name, value in self.requested.items()
                                    for x in (self.devices[name], value)])  # fmt: skip
            self.stage = "read"
            readback = yield from self._read_settings()
            self.stage = "acquire"
            loop_md = {"closed_loop": {"uid": self.result.uid, "iteration": i,
                                       "role": "acquisition"}}  # fmt: skip
            uids, measurement = self._check_acquired((yield from self.acquire(
                dict(readback), i, loop_md)))  # fmt: skip
            self.stage = "ingest"
            self.agent.ingest(dict(readback), measurement)
            self.stage = "report"
            report = _check_plain("the agent's report", dict(self.agent.report() or {}))
            self.result.report, self.result.iterations = report, i + 1
            diverged = report.get("diverged")
            self.stage = "converged"
            done = not diverged and bool(self.converged(report))
            decision = (f"diverged: {diverged}" if diverged else CONVERGED if done
                        else BUDGET if i + 1 == self.budget else CONTINUE)  # fmt: skip
            self.stage = "record"
            yield from self._emit(ITERATIONS_STREAM, iteration_data(
                iteration=i, requested=self.requested, readback=readback, inputs=uids,
                measurement=measurement, report=report, decision=decision))  # fmt: skip
            if diverged:
                self.stage = "diverged"
                raise LoopDiverged(f"the agent reports that the loop diverged: {diverged}")
            if done:
                self.result.converged = True
                self.result.reason = f"converged after {i + 1} iteration(s)"
                return
        self.result.reason = f"budget exhausted: {self.budget} iteration(s) without convergence"

    def _decide(self) -> dict:
        points = list(self.agent.suggest(1))
        if not points or not isinstance(points[0], Mapping):
            raise ValueError(f"the agent suggested {points!r}: allowed a list of one or "
                             "more {setting name: value} mappings")  # fmt: skip
        point = _check_plain("the agent's suggestion", dict(points[0]))
        unknown = sorted(set(point) - set(self.devices))
        if unknown:
            raise ValueError(f"the agent suggested {point!r}: {unknown} are not settings "
                             f"of this loop; allowed {list(self.devices)}")  # fmt: skip
        return point

    def _check_acquired(self, out) -> tuple[list[str], dict]:
        if not (isinstance(out, tuple | list) and len(out) == 2
                and isinstance(out[1], Mapping)):  # fmt: skip
            raise ValueError(f"acquire returned {out!r}: allowed (run uid(s), measurement "
                             "mapping)")  # fmt: skip
        uids, measurement = out
        uids = [uids] if isinstance(uids, str) else list(uids or [])
        if not all(isinstance(u, str) for u in uids):
            raise ValueError(f"acquire returned run uids {uids!r}: allowed strings")
        self.inputs = uids
        self.result.acquisitions.extend(uids)
        return uids, _check_plain("the measurement", dict(measurement))

    def _read_settings(self) -> MsgGenerator[dict]:
        """Every setting's value as read back now (``{name: value}``)."""
        values = {}
        for name, device in self.devices.items():
            reading = yield Msg("read", device)
            if reading is None:  # not a live RunEngine (a plan listed for inspection)
                values[name] = 0.0
                continue
            key = device.name if device.name in reading else next(iter(reading))
            value = to_plain(reading[key]["value"])
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            values[name] = float(value) if numeric else value
        return values

    def _emit(self, stream: str, data: dict) -> MsgGenerator[None]:
        record = self.records[stream]
        record.data = data

        def event():
            yield from bps.create(name=stream)
            yield from bps.read(record)
            yield from bps.save()

        yield from self._u(event())

    def _restore(self) -> MsgGenerator[str]:
        """Set every setting back to its start value; record it; return its error."""
        if self.start_values is None:
            return ""
        error, readback = "", {}
        try:
            pairs = [x for name, value in self.start_values.items()
                     for x in (self.devices[name], value)]  # fmt: skip
            yield from bps.mv(*pairs)
        except (RequestAbort, RequestStop):
            raise
        except Exception as exc:
            error = failure_reason(exc)
            logger.error("closed loop %s: the restore failed: %s", self.result.uid, error)
        try:
            readback = yield from self._read_settings()
        except (RequestAbort, RequestStop):
            raise
        except Exception as exc:
            error = error or f"reading back: {failure_reason(exc)}"
        yield from self._emit(RESTORE_STREAM, restore_data(
            requested=self.start_values, readback=readback, error=error))  # fmt: skip
        return error


def run_documents(plan) -> MsgGenerator[tuple[Any, dict[str, list[tuple[str, dict]]]]]:
    """Run ``plan`` and return ``(its result, {run uid: [(name, doc), ...]})`` of every
    run it opened (their documents as the RunEngine emitted them, e.g. for an
    ``acquire`` to find the start document's readbacks and the file a raster wrote).
    """
    runs: dict[str, list[tuple[str, dict]]] = {}
    owner: dict[str, str] = {}

    def watch(name, doc):
        if name == "start":
            runs[doc["uid"]] = [(name, doc)]
            return
        uid = doc.get("run_start") or owner.get(doc.get("descriptor", ""))
        if name == "descriptor" and uid in runs:
            owner[doc["uid"]] = uid
        if uid in runs:
            runs[uid].append((name, doc))

    token = yield from bps.subscribe("all", watch)
    try:
        result = yield from plan
    except GeneratorExit:
        raise  # a halt: nothing more may be sent (the RunEngine drops the subscription)
    except BaseException:
        yield from bps.unsubscribe(token)
        raise
    yield from bps.unsubscribe(token)
    return result, runs


def raw_file(docs: list[tuple[str, dict]]) -> str:
    """The one raw file a run's documents (``run_documents``) name, as a local path."""
    uris = {d["uri"] for n, d in docs if n == "stream_resource"}
    if len(uris) != 1:
        raise ValueError(f"the run names {len(uris)} raw files; expected one")
    uri = uris.pop()
    return uri.split("file://localhost", 1)[-1] if uri.startswith("file://") else uri
