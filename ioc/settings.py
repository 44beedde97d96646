"""Building blocks shared by the instrument's PV groups.

:func:`setting` makes a setpoint PV and its ``_RBV`` readback; the setpoint's putter
validates the value (:mod:`bluestem.ioc.validation`), refuses changes while an acquisition
runs, and applies the accepted value: its readback follows (rounded to what the hardware
really applies), unless the group declared a hook next to the PV with
``@<setpoint>.applies`` (couplings: square binning, Fov = Step x Shape, ...).
:func:`trigger` makes a busy-free trigger whose action the group declares with
``@<trigger>.fires``. :class:`SettingsGroup` is the base of every group: any refused CA
write — from our validation or from caproto's own conversion — is *flagged* (PV alarm,
the group's message PV, the instrument's :class:`~bluestem.ioc.status.StatusBoard`)
before the error goes back to the client, so the put fails.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from caproto import AlarmSeverity, AlarmStatus, CaprotoConversionError, ChannelType
from caproto.server import PVGroup, pvproperty
from caproto.server.server import (
    PvpropertyChar,
    PvpropertyDouble,
    PvpropertyEnum,
    PvpropertyInteger,
    PvpropertyString,
)

from .control import Controller
from .status import StatusBoard, wire_text
from .validation import InvalidSetting, Limits, check_choice, check_enum, check_limits

__all__ = [
    "LONG_STRING",
    "Setpoint",
    "Setting",
    "SettingsGroup",
    "Trigger",
    "long_string",
    "readback",
    "setting",
    "trigger",
]

# areaDetector keeps strings longer than a DBR_STRING (40 chars) in CHAR waveforms.
LONG_STRING = 256


class _Flagging:
    """Mixin: a CA write that fails for any reason is flagged before it is refused."""

    async def write_from_dbr(self, *args, **kwargs):
        try:
            return await super().write_from_dbr(*args, **kwargs)
        except Exception as exc:
            await self.group.refuse(self, exc)
            raise


class _Double(_Flagging, PvpropertyDouble):
    pass


class _Integer(_Flagging, PvpropertyInteger):
    pass


class _Enum(_Flagging, PvpropertyEnum):
    async def write_from_dbr(self, data, *args, **kwargs):
        try:
            return await super().write_from_dbr(data, *args, **kwargs)
        except CaprotoConversionError:
            # caproto could not map the value to a state: refuse it with a message that
            # names the value and the allowed states (already flagged by _Flagging).
            try:
                check_enum(self.pvname, data, self.enum_strings)
            except InvalidSetting as exc:
                await self.group.refuse(self, exc)
                raise exc from None
            raise

    async def verify_value(self, value):
        # Only ever hold one of the enum strings (caproto would let some through).
        value = check_enum(self.pvname, value, self.enum_strings)
        return await super().verify_value(value)


class _Char(_Flagging, PvpropertyChar):
    pass


class _String(_Flagging, PvpropertyString):
    pass


#: A setting's hook: ``await hook(group, setting, value)`` applies an accepted value.
Hook = Callable[[Any, "Setting", Any], Awaitable[None]]


@dataclass(eq=False)
class Setting:
    """How one setpoint is validated and applied.

    ``limits`` for numbers, ``choices`` for a fixed set of numbers (binning), ``quantum``
    the step the hardware really applies (the readback is rounded to it), ``live`` when the
    setting may change during an acquisition (beam blanking is a safety action), ``hook``
    the group's coroutine that applies an accepted value (declared with
    :meth:`Setpoint.applies`; None: the readback follows).
    """

    name: str
    limits: Limits | None = None
    choices: Sequence[int] | None = None
    quantum: float | None = None
    units: str = ""
    live: bool = False
    hook: Hook | None = None

    def validate(self, pvname: str, value):
        """The value to apply, or raise :class:`InvalidSetting` naming what is allowed."""
        if self.choices is not None:
            return check_choice(pvname, value, self.choices)
        if self.limits is not None:
            check_limits(pvname, value, self.limits, self.units)
        return value

    def applied(self, value):
        """The value the (simulated) hardware really applies."""
        if self.quantum and isinstance(value, int | float):
            return round(round(value / self.quantum) * self.quantum, 12)
        return value


class Setpoint(pvproperty):
    """The setpoint pvproperty of a :class:`Setting` (made by :func:`setting`)."""

    setting: Setting

    def applies(self, hook: Hook) -> Setpoint:
        """Decorator: ``hook(group, setting, value)`` applies an accepted value instead of
        the plain read-back (it may refuse it with :class:`InvalidSetting`).

        Like caproto's ``@pv.putter``, name the decorated coroutine like the setpoint's
        attribute: the decorator returns the setpoint itself.
        """
        if self.setting.hook is not None:
            raise TypeError(f"{self.setting.name} already has a hook")
        self.setting.hook = hook
        return self


class Trigger(pvproperty):
    """A busy-free trigger pvproperty (made by :func:`trigger`)."""

    action: Callable[[Any], Awaitable[None]] | None = None

    def fires(self, action: Callable[[Any], Awaitable[None]]) -> Trigger:
        """Decorator: ``await action(group)`` runs when 1 is written (name it like the
        trigger's attribute: the decorator returns the trigger itself)."""
        self.action = action
        return self


def setting(
    name: str,
    value,
    doc: str,
    *,
    limits: Limits | None = None,
    choices: Sequence[int] | None = None,
    quantum: float | None = None,
    units: str = "",
    enum_strings: Sequence[str] | None = None,
    dtype=None,
    precision: int = 4,
    live: bool = False,
):
    """A setpoint PV ``name`` and its read-only ``name_RBV``.

    Returns
    -------
    (Setpoint, pvproperty)
        The setpoint (whose putter validates, locks and applies; a hook is declared with
        :meth:`Setpoint.applies`) and its readback.
    """
    spec = Setting(name, limits, choices, quantum, units, live)
    value = _plain_enum(value)

    async def put(group, instance, value):
        return await group.apply(instance, spec, value)

    kwargs = {}
    if enum_strings is not None:
        dtype = ChannelType.ENUM
        kwargs["enum_strings"] = list(enum_strings)
    elif dtype is None:
        dtype = float if isinstance(value, float) else int
    if dtype is float:
        kwargs["precision"] = precision
    if dtype is ChannelType.CHAR:
        kwargs["max_length"] = LONG_STRING
    if units:
        kwargs["units"] = units
    if limits is not None and dtype in (float, int):
        # Display limits only: control limits would make caproto refuse out-of-range puts
        # before our putter can flag them.
        if limits.low is not None:
            kwargs["lower_disp_limit"] = limits.low
        if limits.high is not None:
            kwargs["upper_disp_limit"] = limits.high
    rng = f" Allowed {limits.describe()}{' ' + units if units else ''}." if limits else ""
    if choices:
        rng = f" Allowed {', '.join(map(str, choices))}."
    if enum_strings:
        rng = f" One of {', '.join(enum_strings)}."
    set_pv = Setpoint(
        name=name,
        value=value,
        dtype=dtype,
        put=put,
        doc=f"{doc}{rng}",
        alarm_group=name,
        **kwargs,
    )
    set_pv.setting = spec
    rbv = pvproperty(
        name=f"{name}_RBV",
        value=spec.applied(value) if enum_strings is None else value,
        dtype=dtype,
        read_only=True,
        doc=f"Readback of {name}: the value really applied.",
        alarm_group=f"{name}_RBV",
        **kwargs,
    )
    return set_pv, rbv


def readback(name: str, value, doc: str, *, units: str = "", enum_strings=None, dtype=None):
    """A read-only PV (an enum when ``enum_strings`` is given)."""
    value = _plain_enum(value)
    kwargs = {"units": units} if units else {}
    if enum_strings is not None:
        dtype = ChannelType.ENUM
        kwargs["enum_strings"] = list(enum_strings)
    elif isinstance(value, float):
        kwargs["precision"] = 3
    return pvproperty(
        name=name, value=value, dtype=dtype, read_only=True, doc=doc, alarm_group=name, **kwargs
    )


def long_string(name: str, value: str, doc: str, *, read_only: bool = False, put=None):
    """A string PV held in a CHAR waveform (read it with ``caget -S`` / ``string=True``)."""
    return pvproperty(
        name=name,
        value=_plain_enum(value),
        dtype=ChannelType.CHAR,
        max_length=LONG_STRING,
        read_only=read_only,
        put=put,
        doc=doc,
        alarm_group=name,
    )


def trigger(name: str, doc: str) -> Trigger:
    """A busy-free trigger: writing 1 runs the action declared with :meth:`Trigger.fires`
    and returns at once (the value reads 0 again)."""

    async def put(group, instance, value):
        if value:
            await prop.action(group)
            await group.cleared(instance)
        return 0

    prop = Trigger(name=name, value=0, dtype=int, put=put, doc=doc, alarm_group=name)
    return prop


class SettingsGroup(PVGroup):
    """Base of the instrument's groups: flagging, the acquisition lock, readbacks.

    The instrument gives each group its :class:`~bluestem.ioc.control.Controller` and the
    :class:`~bluestem.ioc.status.StatusBoard` with :meth:`attach` before anything is
    served.
    """

    type_map: ClassVar[dict] = dict(PVGroup.type_map)
    type_map.update(
        {
            float: _Double,
            int: _Integer,
            ChannelType.DOUBLE: _Double,
            ChannelType.LONG: _Integer,
            ChannelType.ENUM: _Enum,
            ChannelType.CHAR: _Char,
            ChannelType.STRING: _String,
            str: _Char,
        }
    )

    #: attribute name of the group's message PV (a long string), if it has one
    message_attr: str | None = None
    #: what the group asks of the instrument (set by :meth:`attach`)
    control: Controller
    #: where refused writes are flagged (set by :meth:`attach`)
    board: StatusBoard

    def attach(self, control: Controller, board: StatusBoard) -> None:
        """Give the group its controller and the status board."""
        self.control = control
        self.board = board

    def rbv(self, name: str):
        """The ``_RBV`` instance of setting ``name``."""
        return self.pvdb[f"{self.prefix}{name}_RBV"]

    def pv(self, name: str):
        """The instance of PV ``name`` (without the group's prefix)."""
        return self.pvdb[f"{self.prefix}{name}"]

    async def apply(self, instance, spec: Setting, value):
        """Putter of every setting: lock, validate, apply, clear the flag."""
        if not spec.live and self.control.busy:
            if _same(value, instance.value):
                return value  # re-writing the current value changes nothing
            raise InvalidSetting(
                instance.pvname,
                f"cannot change to {_plain(value)!r} during an acquisition "
                f"(allowed: the current value {_plain(instance.value)!r}, or stop first)",
            )
        value = spec.validate(instance.pvname, value)
        await self.settle(spec, value)
        await self.cleared(instance)
        return value

    async def settle(self, spec: Setting, value) -> None:
        """Apply an accepted value: the setting's hook, or else its readback follows."""
        if spec.hook is not None:
            await spec.hook(self, spec, value)
        else:
            await self.read_back(spec, value)

    async def read_back(self, spec: Setting, value) -> None:
        """The readback of ``spec`` takes the value the hardware really applies."""
        await self.rbv(spec.name).write(spec.applied(value))

    async def cleared(self, instance) -> None:
        """``instance`` took a write: its flag (and alarm) goes, if it had one."""
        if self.board.is_flagged(instance.pvname):
            await instance.alarm.write(
                status=AlarmStatus.NO_ALARM, severity=AlarmSeverity.NO_ALARM
            )
            await self.board.clear(instance.pvname)

    async def refuse(self, instance, exc: Exception) -> None:
        """Flag a refused write on ``instance``: alarm, group message, status board."""
        message = str(exc) if isinstance(exc, InvalidSetting) else f"{instance.pvname}: {exc}"
        severity = (
            AlarmSeverity.MAJOR_ALARM
            if isinstance(exc, InvalidSetting) and "acquisition" in message
            else AlarmSeverity.MINOR_ALARM
        )
        await instance.alarm.write(status=AlarmStatus.WRITE, severity=severity)
        if self.message_attr is not None:
            await getattr(self, self.message_attr).write(wire_text(message, LONG_STRING - 1))
        await self.board.flag(instance.pvname, message)


def _plain_enum(value):
    """A member of a vocabulary enum as its plain string (what CA and files hold)."""
    return value.value if isinstance(value, Enum) else value


def _plain(value):
    """numpy scalars as Python values, for messages."""
    return value.item() if hasattr(value, "item") else value


def _same(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    except (TypeError, ValueError):
        return a == b
