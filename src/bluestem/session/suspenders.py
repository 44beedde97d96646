"""Suspenders: conditions under which a scan pauses instead of recording bad data.

The inventory's ``suspenders:`` mapping (docs/session.md, "Suspenders") installs bluesky
suspenders on the session's RunEngine, each watching a readback of a session device:

``beam_blank: true``
    the microscope's ``BeamBlank_RBV`` is On, unless this session blanked it itself
    (``dark_reference`` does);
``beam_current: {below: pA, resume: pA}``
    ``BeamCurrent_RBV`` below ``below`` (resumes at or above ``resume``, default
    ``below``);
``high_tension: {tolerance: kV}``
    ``HighTension_RBV`` further than ``tolerance`` from its setpoint;
``disk: {below_mb: MB, resume_mb: MB}``
    the detector's ``HDF1:FreeSpace_RBV`` below ``below_mb`` (resumes at or above
    ``resume_mb``, default 1.2 × ``below_mb``);
``ioc: true``
    a device's IOC disconnected (the next plan waits until it is back; the plan in flight
    fails fast, :mod:`bluestem.devices.liveness`);
``sleep: s``
    how long a condition must stay clear before the scan resumes (default 1).

A tripped suspender makes the RunEngine pause the run: the scan generator holds at the
next row boundary, the detector's watchdog waits. When the condition clears the scan goes
on; rows the IOC scanned while the beam was blanked are scanned again, so the file is
the one an uninterrupted scan writes. The run's ``interruptions`` stream records each
suspension (its reason) and each resume; the notifier tells operators.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from bluesky import Msg
from bluesky.suspenders import SuspenderBase
from bluesky.utils import MsgGenerator

__all__ = [
    "SUSPENDER_KEYS",
    "Condition",
    "SettingsChanged",
    "check_suspenders",
    "make_suspenders",
    "resumed",
]

SUSPENDER_KEYS = ("beam_blank", "beam_current", "high_tension", "disk", "ioc", "sleep")
#: ``disk.resume_mb`` by default: ``below_mb`` times this (no flapping at the threshold).
DISK_HYSTERESIS = 1.2


class Condition(SuspenderBase):
    """A suspender tripped while ``reason(value)`` says why (a string) and cleared when it
    says nothing (None); the reason names the PV and the value.

    Parameters
    ----------
    signal : ophyd.Signal
        What is watched (its value, or with ``event_type="meta"`` its connection).
    reason : callable
        ``reason(value) -> str | None``.
    name : str
        The condition's inventory key (``beam_blank`` ...).
    """

    def __init__(self, signal, reason: Callable[[Any], str | None], *, name: str,
                 **kwargs) -> None:  # fmt: skip
        super().__init__(signal, **kwargs)
        self.name = name
        self._reason = reason
        self._why = ""

    def _should_suspend(self, value) -> bool:
        why = self._reason(value)
        if why:
            self._why = why
        return bool(why)

    def _should_resume(self, value) -> bool:
        return not self._reason(value)

    def _get_justification(self) -> str:
        return f"{self.name}: {self._why}" if self._why else ""


class _Connection(Condition):
    """Tripped while ``signal`` is disconnected (ophyd's ``meta`` subscription)."""

    def __call__(self, value=None, **kwargs):
        super().__call__(bool(kwargs.get("connected", value)))

    def install(self, RE, *, event_type=None):
        super().install(RE, event_type="meta")


def check_suspenders(value: Any) -> dict:
    """The ``suspenders:`` mapping validated (ValueError naming the entry and what is
    allowed); ``{}`` for None."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"suspenders={value!r}: allowed a mapping with keys "
                         f"{', '.join(SUSPENDER_KEYS)}")  # fmt: skip
    unknown = sorted(set(value) - set(SUSPENDER_KEYS))
    if unknown:
        raise ValueError(f"suspenders: unknown key(s) {unknown}; allowed: "
                         f"{', '.join(SUSPENDER_KEYS)}")  # fmt: skip
    out = dict(value)
    for key in ("beam_blank", "ioc"):
        if key in out and not isinstance(out[key], bool):
            raise ValueError(f"suspenders.{key}={out[key]!r}: allowed true or false")
    out["sleep"] = _number("sleep", out.get("sleep", 1.0), 0.0, 3600.0)
    for key, fields, required in (("beam_current", ("below", "resume"), "below"),
                                  ("high_tension", ("tolerance",), "tolerance"),
                                  ("disk", ("below_mb", "resume_mb"), "below_mb")):  # fmt: skip
        if key not in out:
            continue
        entry = out[key]
        if not isinstance(entry, Mapping) or required not in entry:
            more = ", ".join(fields[1:]) or "nothing else"
            raise ValueError(f"suspenders.{key}={entry!r}: allowed a mapping with "
                             f"{required} (and {more})")  # fmt: skip
        bad = sorted(set(entry) - set(fields))
        if bad:
            raise ValueError(f"suspenders.{key}: unknown key(s) {bad}; allowed: {fields}")
        out[key] = {f: _number(f"{key}.{f}", v, 0.0, 1e9) for f, v in entry.items()}
    current = out.get("beam_current")
    if current and current.get("resume", current["below"]) < current["below"]:
        raise ValueError(f"suspenders.beam_current.resume={current['resume']!r}: allowed >= "
                         f"below ({current['below']!r})")  # fmt: skip
    disk = out.get("disk")
    if disk and disk.get("resume_mb", math.inf) < disk["below_mb"]:
        raise ValueError(f"suspenders.disk.resume_mb={disk['resume_mb']!r}: allowed >= "
                         f"below_mb ({disk['below_mb']!r})")  # fmt: skip
    return out


def _number(key: str, value: Any, low: float, high: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"suspenders.{key}={value!r}: allowed a number in [{low:g}, {high:g}]")
    return float(value)


def _find(devices: Mapping[str, Any], path: str):
    """The first device with the dotted attribute ``path`` (``hdf.free_space``)."""
    for device in devices.values():
        obj = device
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        else:
            return obj
    return None


def _need(devices, path: str, key: str):
    found = _find(devices, path)
    if found is None:
        raise ValueError(f"suspenders.{key}: no session device has {path!r} (allowed only "
                         "with a microscope / detector of bluestem.devices)")  # fmt: skip
    return found


def _blanked(devices, config):
    setting = _need(devices, "beam_blank", "beam_blank")
    rbv = setting.readback

    def reason(value):
        on = str(value).lower() in ("on", "1", "true")
        # the session's own blank (a dark reference sets it) is no reason to stop
        mine = str(getattr(setting, "requested", None)).lower() == "on"
        return f"{rbv.pvname} is {value}: the beam is blanked" if on and not mine else None

    return rbv, reason


def _low_current(devices, config):
    rbv = _need(devices, "beam_current.readback", "beam_current")
    below = config["beam_current"]["below"]
    again = config["beam_current"].get("resume", below)
    return rbv, _floor(f"{rbv.pvname} = {{:g}} pA, below {below:g} pA (resumes at "
                       f"{again:g})", below, again)  # fmt: skip


def _off_setpoint(devices, config):
    setting = _need(devices, "high_tension", "high_tension")
    tol = config["high_tension"]["tolerance"]
    target: dict[str, float] = {}
    # the setpoint's own monitor: no CA read from inside a CA callback
    setting.setpoint.subscribe(lambda value, **kw: target.__setitem__("v", float(value)))

    def reason(value):
        want = target.get("v")
        if want is None or abs(float(value) - want) <= tol:
            return None
        return (f"{setting.readback.pvname} = {float(value):g} kV, off its setpoint "
                f"{want:g} kV by more than {tol:g} kV")  # fmt: skip

    return setting.readback, reason


def _disk_low(devices, config):
    space = _need(devices, "hdf.free_space", "disk")
    below = config["disk"]["below_mb"]
    again = config["disk"].get("resume_mb", below * DISK_HYSTERESIS)
    return space, _floor(f"{space.pvname} = {{:.0f}} MB free, below {below:g} MB (resumes "
                         f"at {again:g} MB)", below, again, unknown_below=0.0)  # fmt: skip


def _floor(text: str, below: float, again: float, unknown_below: float | None = None):
    """A reason while a value is below ``below``, until it is back at ``again``
    (hysteresis); values below ``unknown_below`` mean "unknown" and never trip."""
    state = {"low": False}

    def reason(value):
        v = float(value)
        if unknown_below is not None and v < unknown_below:
            return None
        state["low"] = v < (again if state["low"] else below)
        return text.format(v) if state["low"] else None

    return reason


#: Inventory key -> (devices, config) -> (signal watched, reason).
_CONDITIONS = {"beam_blank": _blanked, "beam_current": _low_current,
               "high_tension": _off_setpoint, "disk": _disk_low}  # fmt: skip


def make_suspenders(config: Mapping[str, Any], devices: Mapping[str, Any]) -> list[Condition]:
    """The suspenders of a validated ``suspenders:`` mapping on the session's devices."""
    sleep = config.get("sleep", 1.0)
    out: list[Condition] = []

    def add(signal, reason, name, cls=Condition):
        out.append(cls(signal, reason, name=name, sleep=sleep,
                       post_plan=lambda: resumed(name, devices)))  # fmt: skip

    for key, make in _CONDITIONS.items():
        if config.get(key):
            add(*make(devices, config), key)
    if config.get("ioc"):
        for name, device in devices.items():
            signal = _first_signal(device)
            if signal is not None:
                add(signal, _disconnected(name, getattr(signal, "pvname", name)), "ioc",
                    _Connection)  # fmt: skip
    return out


def _disconnected(name: str, pv: str):
    return lambda ok: None if ok else f"{name}'s IOC ({pv}) is disconnected"


class SettingsChanged(RuntimeError):
    """A suspended scan cannot resume: settings changed while it waited."""


def resumed(name: str, devices: Mapping[str, Any]) -> MsgGenerator[None]:
    """Before a suspended scan goes on: every microscope setting re-verified against its
    setpoint (:class:`SettingsChanged` fails the run otherwise), and the resume recorded
    in the run's ``interruptions`` stream."""
    problems = [text for device in devices.values()
                for text in getattr(device, "mismatched_settings", list)()]  # fmt: skip
    if problems:
        raise SettingsChanged(f"cannot resume after {name}: " + "; ".join(problems))
    yield Msg("record_interruption", None, f"resume: {name} clear")


def _first_signal(device):
    """One EPICS signal of ``device`` (its IOC's connection stands for the device's)."""
    for walk in getattr(device, "walk_signals", list)():
        if hasattr(walk.item, "pvname"):
            return walk.item
    return None
