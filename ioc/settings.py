"""Building blocks shared by the instrument's PV groups.

:func:`setting` makes a setpoint PV and its ``_RBV`` readback; the setpoint's putter
validates the value (:mod:`bluestem.ioc.validation`), refuses changes while an acquisition
runs, and lets the group turn the accepted value into the readback the hardware really
applied.  :class:`SettingsGroup` is the base of every group: any refused CA write — from
our validation or from caproto's own conversion — is *flagged* (PV alarm, the group's
message PV, ``STATUS``) before the error goes back to the client, so the put fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from caproto import AlarmSeverity, AlarmStatus, CaprotoConversionError, ChannelType
from caproto.server import PVGroup, pvproperty
from caproto.server.server import (
    PvpropertyChar,
    PvpropertyDouble,
    PvpropertyEnum,
    PvpropertyInteger,
    PvpropertyString,
)

from .validation import InvalidSetting, Limits, check_choice, check_enum, check_limits

__all__ = [
    "LONG_STRING",
    "Setting",
    "SettingsGroup",
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


@dataclass(frozen=True)
class Setting:
    """How one setpoint is validated and read back.

    ``limits`` for numbers, ``choices`` for a fixed set of numbers (binning), ``quantum``
    the step the hardware really applies (the readback is rounded to it), ``live`` when the
    setting may change during an acquisition (beam blanking is a safety action).
    """

    name: str
    limits: Limits | None = None
    choices: Sequence[int] | None = None
    quantum: float | None = None
    units: str = ""
    live: bool = False

    def validate(self, pvname: str, value):
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
    """A setpoint PV ``name`` and its read-only ``name_RBV``; returns both pvproperties."""
    spec = Setting(name, limits, choices, quantum, units, live)

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
    set_pv = pvproperty(
        name=name,
        value=value,
        dtype=dtype,
        put=put,
        doc=f"{doc}{rng}",
        alarm_group=name,
        **kwargs,
    )
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
    """A read-only PV."""
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
        value=value,
        dtype=ChannelType.CHAR,
        max_length=LONG_STRING,
        read_only=read_only,
        put=put,
        doc=doc,
        alarm_group=name,
    )


def trigger(name: str, doc: str, action: str):
    """A busy-free trigger: writing 1 calls ``await group.<action>()`` and returns at once."""

    async def put(group, instance, value):
        if value:
            await getattr(group, action)(instance)
            await group.root.clear_flag(instance)
        return 0

    return pvproperty(name=name, value=0, dtype=int, put=put, doc=doc, alarm_group=name)


class SettingsGroup(PVGroup):
    """Base of the instrument's groups: flagging, the acquisition lock, readbacks."""

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

    @property
    def root(self):
        group = self
        while group.parent is not None:
            group = group.parent
        return group

    def rbv(self, name: str):
        """The ``_RBV`` instance of setting ``name``."""
        return self.pvdb[f"{self.prefix}{name}_RBV"]

    def pv(self, name: str):
        return self.pvdb[f"{self.prefix}{name}"]

    async def apply(self, instance, spec: Setting, value):
        """Putter of every setting: lock, validate, apply, read back."""
        if not spec.live and self.root.busy:
            if _same(value, instance.value):
                return value  # re-writing the current value changes nothing
            raise InvalidSetting(
                instance.pvname,
                f"cannot change to {_plain(value)!r} during an acquisition "
                f"(allowed: the current value {_plain(instance.value)!r}, or stop first)",
            )
        value = spec.validate(instance.pvname, value)
        await self.setting_changed(spec, value)
        await self.root.clear_flag(instance)
        return value

    async def setting_changed(self, spec: Setting, value) -> None:
        """Hook: update the readback (and anything coupled); override per group."""
        await self.rbv(spec.name).write(spec.applied(value))

    async def refuse(self, instance, exc: Exception) -> None:
        """Flag a refused write on ``instance``: alarm, group message, STATUS."""
        message = str(exc) if isinstance(exc, InvalidSetting) else f"{instance.pvname}: {exc}"
        severity = (
            AlarmSeverity.MAJOR_ALARM
            if isinstance(exc, InvalidSetting) and "acquisition" in message
            else AlarmSeverity.MINOR_ALARM
        )
        await instance.alarm.write(status=AlarmStatus.WRITE, severity=severity)
        if self.message_attr is not None:
            await getattr(self, self.message_attr).write(message[: LONG_STRING - 1])
        await self.root.flag(instance, message)


def _plain(value):
    """numpy scalars as Python values, for messages."""
    return value.item() if hasattr(value, "item") else value


def _same(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    except (TypeError, ValueError):
        return a == b
