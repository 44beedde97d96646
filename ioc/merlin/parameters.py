"""The Merlin command port's parameter table (docs/merlin.md), as data the simulator and
the IOC share: names, access, allowed values or ranges, defaults, and the check of a SET.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .protocol import _FLOAT, _INTEGER, format_value

__all__ = ["PARAMETERS", "Parameter", "check_value"]


@dataclass(frozen=True)
class Parameter:
    """One row of the parameter table of docs/merlin.md.

    ``access`` is ``"get"`` (read only), ``"set"`` (read and write) or ``"cmd"``;
    ``allowed`` lists discrete values, ``low``/``high`` an inclusive range (None: none).
    """

    name: str
    access: str
    kind: type
    allowed: tuple | None
    low: float | None
    high: float | None
    doc: str
    default: Any


def _parameters() -> dict[str, Parameter]:
    triggers = (0, 1, 2, 3, 4, 5)
    trigger_doc = "0 internal, 1/2 rising/falling TTL, 3/4 rising/falling LVDS, 5 soft"
    big = 2**31 - 1
    rows = [
        ("NUMFRAMESTOACQUIRE", "set", int, None, 1, big, "frames of an acquisition", 1),
        ("ACQUISITIONTIME", "set", float, None, 0.001, 1e5, "shutter open per frame (ms)", 1.0),
        ("ACQUISITIONPERIOD", "set", float, None, 0.001, 1e5, "frame period (ms)", 1.0),
        ("COUNTERDEPTH", "set", int, (1, 6, 12, 24), None, None, "counter bits per pixel", 12),
        ("CONTINUOUSRW", "set", int, (0, 1), None, None, "continuous read/write", 0),
        ("TRIGGERSTART", "set", int, triggers, None, None, f"start: {trigger_doc}", 0),
        ("TRIGGERSTOP", "set", int, triggers, None, None, f"stop: {trigger_doc}", 0),
        ("NUMFRAMESPERTRIGGER", "set", int, None, 1, big, "frames started by a trigger", 1),
        ("RUNHEADLESS", "set", int, (0, 1), None, None, "no GUI on the detector PC", 1),
        ("FILEFORMAT", "set", int, (0, 2), None, None, "0 binary, 2 raw pixels", 0),
        ("FILEENABLE", "set", int, (0, 1), None, None, "the detector PC writes a file", 0),
        ("IMAGEX", "get", int, (256, 512), None, None, "columns of an assembled frame", 256),
        ("IMAGEY", "get", int, (256, 512), None, None, "rows of an assembled frame", 256),
    ]
    for n in range(8):
        default = 10.0 if n == 0 else 0.0
        rows.append((f"THRESHOLD{n}", "set", float, None, 0.0, 999.0, "threshold (keV)", default))
    rows += [
        ("DETECTORSTATUS", "get", int, (0, 1, 2), None, None, "0 idle, 1 busy, 2 standby", 0),
        ("SOFTWAREVERSION", "get", str, None, None, None, "software version", "1.7.7.0"),
        ("STARTACQUISITION", "cmd", str, None, None, None, "arm and start", None),
        ("STOPACQUISITION", "cmd", str, None, None, None, "end now", None),
        ("SOFTTRIGGER", "cmd", str, None, None, None, "start frames (TRIGGERSTART 5)", None),
    ]
    return {row[0]: Parameter(*row) for row in rows}


#: Every parameter and command of docs/merlin.md, by name.
PARAMETERS: dict[str, Parameter] = _parameters()


def _allowed_text(p: Parameter) -> str:
    if p.allowed is not None:
        return "allowed " + ", ".join(format_value(v) for v in p.allowed)
    # "100000", not "100000.0": the range reads as the table of docs/merlin.md.
    low, high = (format_value(v).removesuffix(".0") for v in (p.low, p.high))
    return f"allowed {low} to {high}"


def check_value(name: str, text: str) -> Any:
    """Parse and validate the value of a SET.

    Parameters
    ----------
    name : str
        The parameter name.
    text : str
        The value as sent.

    Returns
    -------
    int, float or str
        The value, of the parameter's type.

    Raises
    ------
    KeyError
        When no settable parameter has that name (status 2); a GET-only parameter or a
        command is not settable.
    ValueError
        When the value is not a number of the right kind or not allowed (status 3); the
        message names the parameter, the value and what is allowed.
    """
    p = PARAMETERS.get(name)
    if p is None:
        raise KeyError(f"unknown Merlin parameter {name!r}")
    if p.access != "set":
        raise KeyError(f"Merlin parameter {name} cannot be set")
    if p.kind is str:
        return text
    pattern, noun = (_INTEGER, "an integer") if p.kind is int else (_FLOAT, "a number")
    if not pattern.fullmatch(text):
        raise ValueError(f"{name}: {text!r} is not {noun}; {_allowed_text(p)}")
    value = p.kind(text)
    inside = (
        value in p.allowed
        if p.allowed is not None
        else math.isfinite(value) and p.low <= value <= p.high
    )
    if not inside:
        raise ValueError(f"{name}: {text!r} is out of range; {_allowed_text(p)}")
    return value
