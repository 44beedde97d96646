"""The agent of a closed loop: what it is asked (``suggest``), told (``ingest``) and what
it says about itself (``report``).

The protocol is bluesky-adaptive's, one point at a time:

- ``suggest(n) -> list of points``: the next ``n`` points, each a mapping
  ``{setting name: value}`` of the changes to make (``{}``: measure where we are);
- ``ingest(point, measurement)``: the settings as read back when the measurement was
  taken (``{setting name: value}`` of every setting the loop drives) and the measurement
  (a JSON-able mapping; see docs/loop.md for the keys the record knows);
- ``report() -> dict``: the agent's state, JSON-able (fitted model, uncertainties, its
  decision in words; ``"diverged"`` set to a reason when it has given up).

``ask`` and ``tell``, the names of bluesky-adaptive's first agents, are deprecated aliases
of ``suggest`` and ``ingest``. :func:`as_agent` also takes objects written for
bluesky-adaptive: a 1.0 ``Optimizer`` (``suggest(num_points)`` / ``ingest(points)``,
points carrying an ``"_id"``) and an old ``tell``/``ask``/``report`` agent.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Agent",
    "AgentProtocol",
    "OptimizerAgent",
    "TellAskAgent",
    "agent_info",
    "as_agent",
    "make_agent",
]

#: The key bluesky-adaptive 1.0 uses to identify a suggestion.
ID_KEY = "_id"


@runtime_checkable
class AgentProtocol(Protocol):
    """What :func:`bluestem.plans.closed_loop` needs of an agent."""

    def suggest(self, n: int = 1) -> Sequence[Mapping[str, Any]]:
        """The next ``n`` points (``{setting name: value}`` changes)."""
        ...

    def ingest(self, point: Mapping[str, Any], measurement: Mapping[str, Any]) -> None:
        """One measurement, taken with the settings ``point`` (as read back)."""
        ...

    def report(self) -> dict:
        """The agent's state (JSON-able)."""
        ...


class Agent:
    """Base class of bluestem's agents (subclass it and write the three methods).

    A subclass that takes its parameters as keyword arguments and returns them from
    :meth:`parameters` can be rebuilt from the record (:func:`make_agent`), which is what
    replays a loop's decisions from the catalogue.
    """

    def suggest(self, n: int = 1) -> list[dict[str, Any]]:
        """The next ``n`` points: each ``{setting name: value}`` (the changes to make)."""
        raise NotImplementedError(f"{type(self).__name__}.suggest")

    def ingest(self, point: Mapping[str, Any], measurement: Mapping[str, Any]) -> None:
        """Learn from ``measurement``, taken with the settings ``point`` (read back)."""
        raise NotImplementedError(f"{type(self).__name__}.ingest")

    def report(self) -> dict:
        """The agent's state, JSON-able: fitted values, uncertainties, its decision.

        ``{"diverged": reason}`` makes the loop stop, restore and fail.
        """
        return {}

    def parameters(self) -> dict:
        """The keyword arguments that rebuild this agent (JSON-able); default none."""
        return {}

    def ask(self, n: int = 1) -> list[dict[str, Any]]:
        """Deprecated alias of :meth:`suggest`."""
        warnings.warn("Agent.ask() is deprecated; use suggest()", DeprecationWarning, stacklevel=2)
        return self.suggest(n)

    def tell(self, point: Mapping[str, Any], measurement: Mapping[str, Any]) -> None:
        """Deprecated alias of :meth:`ingest`."""
        warnings.warn("Agent.tell() is deprecated; use ingest()", DeprecationWarning, stacklevel=2)
        return self.ingest(point, measurement)


def _positional(method) -> int:
    """How many positional arguments a bound method takes (-1: any number)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return -1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return -1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class _Wrapped(Agent):
    """An object with our three methods that is not an :class:`Agent` subclass."""

    def __init__(self, inner):
        self.inner = inner

    def suggest(self, n: int = 1):
        return list(self.inner.suggest(n))

    def ingest(self, point, measurement):
        self.inner.ingest(point, measurement)

    def report(self):
        return dict(self.inner.report() or {})

    def parameters(self):
        return _parameters_of(self.inner)


class TellAskAgent(Agent):
    """An agent written with the old names: ``tell(x, y)``, ``ask(n)``, ``report()``.

    Wrapping one warns (:class:`DeprecationWarning`): write ``ingest``/``suggest``.
    """

    def __init__(self, inner):
        warnings.warn(
            f"{type(inner).__name__}: tell()/ask() agents are deprecated; write "
            "ingest(point, measurement) and suggest(n)",
            DeprecationWarning,
            stacklevel=3,
        )
        self.inner = inner

    def suggest(self, n: int = 1):
        points = self.inner.ask(n)
        return [dict(points)] if isinstance(points, Mapping) else [dict(p) for p in points]

    def ingest(self, point, measurement):
        self.inner.tell(point, measurement)

    def report(self):
        report = getattr(self.inner, "report", None)
        return dict(report() or {}) if callable(report) else {}

    def parameters(self):
        return _parameters_of(self.inner)


class OptimizerAgent(Agent):
    """A bluesky-adaptive 1.0 ``Optimizer`` as an agent.

    ``suggest(n)`` asks ``optimizer.suggest(n)`` and keeps each point's ``"_id"`` (the
    point the loop sees has none); ``ingest(point, measurement)`` gives the optimizer
    ``[{"_id": id, **outcomes}]``, the outcomes being ``measurement["values"]`` (or the
    measurement's numbers); a point it did not suggest is ingested with its parameters.
    ``report()`` holds ``should_stop``/``stop_reason`` (``SupportsStoppingCriteria``) and
    ``best`` (``get_best_points()``) when the optimizer has them.
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self._ids: list[Any] = []
        self._last: dict = {}

    def suggest(self, n: int = 1):
        points = []
        for raw in self.optimizer.suggest(n):
            raw = dict(raw)
            self._ids.append(raw.pop(ID_KEY, None))
            points.append(raw)
        return points

    def ingest(self, point, measurement):
        values = measurement.get("values", measurement)
        outcome = {k: v for k, v in values.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip
        ident = self._ids.pop(0) if self._ids else None
        if ident is None:
            outcome = {**point, **outcome}  # a point it did not suggest: say where
        else:
            outcome[ID_KEY] = ident
        self.optimizer.ingest([outcome])
        self._last = outcome

    def report(self):
        out: dict[str, Any] = {"last_outcome": {k: v for k, v in self._last.items()
                                                if k != ID_KEY}}  # fmt: skip
        should_stop = getattr(self.optimizer, "should_stop", None)
        if callable(should_stop):
            stop, why = should_stop()
            out.update(should_stop=bool(stop), stop_reason=why or "")
        best = getattr(self.optimizer, "get_best_points", None)
        if callable(best):
            try:
                out["best"] = [{"parameters": dict(p), "outcomes": dict(o)}
                               for _, p, o in best()]  # fmt: skip
            except Exception as exc:  # a report never stops the loop
                out["best_error"] = f"{type(exc).__name__}: {exc}"
        return out

    def parameters(self):
        return _parameters_of(self.optimizer)


def _has(obj, *names: str) -> bool:
    return all(callable(getattr(obj, n, None)) for n in names)


def as_agent(obj) -> Agent:
    """``obj`` as an :class:`Agent`.

    Accepted: an :class:`Agent`; any object with ``suggest(n)``,
    ``ingest(point, measurement)`` and ``report()``; a bluesky-adaptive 1.0 optimizer
    (``suggest(num_points)``, ``ingest(points)``: :class:`OptimizerAgent`); an old
    ``tell``/``ask`` agent (:class:`TellAskAgent`, deprecated).

    Raises
    ------
    ValueError
        ``obj`` is none of these (the message says what was missing).
    """
    if isinstance(obj, Agent):
        return obj
    if _has(obj, "suggest", "ingest"):
        if _positional(obj.ingest) == 1:
            return OptimizerAgent(obj)
        if _has(obj, "report"):
            return _Wrapped(obj)
    if _has(obj, "tell", "ask"):
        return TellAskAgent(obj)
    raise ValueError(
        f"agent={obj!r}: allowed an object with suggest(n), ingest(point, measurement) "
        "and report() (bluestem.loop.Agent), a bluesky-adaptive Optimizer "
        "(suggest(num_points), ingest(points)) or an old tell(x, y)/ask(n) agent"
    )


def _parameters_of(obj) -> dict:
    params = getattr(obj, "parameters", None)
    if callable(params):
        params = params()
    return dict(params) if isinstance(params, Mapping) else {}


def _class_path(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def agent_info(agent: Agent) -> dict:
    """The record of an agent: ``{"class": dotted path, "parameters": {...}}`` (the
    wrapped object's class for an adapter, and ``"adapter"`` naming the adapter)."""
    inner = getattr(agent, "inner", None) or getattr(agent, "optimizer", None)
    info = {"class": _class_path(inner if inner is not None else agent),
            "parameters": agent.parameters()}  # fmt: skip
    if inner is not None:
        info["adapter"] = type(agent).__name__
    return info


def make_agent(info: Mapping[str, Any]) -> Agent:
    """A fresh agent from its record (:func:`agent_info`): ``class(**parameters)``,
    wrapped by :func:`as_agent`.

    Raises
    ------
    ValueError
        The class cannot be imported or refuses the parameters.
    """
    path = str(info.get("class", ""))
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return as_agent(cls(**dict(info.get("parameters") or {})))
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"agent class {path!r}: cannot rebuild it ({exc})") from exc
