"""The states the IOC publishes and the devices, plans and callbacks read.

Each is a :class:`enum.StrEnum` whose values are the exact PV enum strings, so a member
compares equal to what Channel Access returns (``DetectorState.ERROR == "Error"``) and
:func:`names` gives the ``enum_strings`` of the PV, in PV order.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AutoIncrement",
    "BeamBlank",
    "Compression",
    "DetectorState",
    "Health",
    "ImageMode",
    "ScanMode",
    "ScanState",
    "TriggerMode",
    "WriteStatus",
    "names",
]


class DetectorState(StrEnum):
    """``DET:cam1:DetectorState_RBV`` (areaDetector's states, in its order)."""

    IDLE = "Idle"
    ACQUIRE = "Acquire"
    READOUT = "Readout"
    CORRECT = "Correct"
    SAVING = "Saving"
    ABORTING = "Aborting"
    ERROR = "Error"
    WAITING = "Waiting"
    INITIALIZING = "Initializing"
    DISCONNECTED = "Disconnected"
    ABORTED = "Aborted"


class ScanState(StrEnum):
    """``SCAN:State_RBV``."""

    IDLE = "Idle"
    RUNNING = "Running"
    DONE = "Done"
    ABORTED = "Aborted"
    FAULT = "Fault"
    PAUSED = "Paused"


class WriteStatus(StrEnum):
    """``DET:HDF1:WriteStatus`` (areaDetector's file plugin)."""

    OK = "Write OK"
    ERROR = "Write error"


class Health(StrEnum):
    """``STATUS``: the instrument's overall health for an operator, the four colours of
    a traffic light: green OK, yellow WARN (a refused write), blue PAUSED (operator
    action: a scan is held), red FAULT. PAUSED comes last so that the enum indices of
    the first three stay what they were."""

    OK = "OK"
    WARN = "WARN"
    FAULT = "FAULT"
    PAUSED = "PAUSED"


class TriggerMode(StrEnum):
    """``DET:cam1:TriggerMode``: frames triggered internally or by the scan generator."""

    INTERNAL = "Internal"
    EXTERNAL = "External"


class ImageMode(StrEnum):
    """``DET:cam1:ImageMode``: one frame, ``NumImages`` frames, or until stopped."""

    SINGLE = "Single"
    MULTIPLE = "Multiple"
    CONTINUOUS = "Continuous"


class Compression(StrEnum):
    """``DET:HDF1:Compression``."""

    NONE = "None"
    BITSHUFFLE_LZ4 = "bitshuffle-lz4"


class BeamBlank(StrEnum):
    """``MIC:BeamBlank``: the beam blanker."""

    OFF = "Off"
    ON = "On"


class ScanMode(StrEnum):
    """``SCAN:Mode``: the probe flies along a row, or steps and settles."""

    FLY = "Fly"
    STEP = "Step"


class AutoIncrement(StrEnum):
    """``DET:HDF1:AutoIncrement``: FileNumber goes up after each successful capture."""

    NO = "No"
    YES = "Yes"


def names(states: type[StrEnum]) -> tuple[str, ...]:
    """The PV's ``enum_strings``: the values of ``states`` in definition order."""
    return tuple(member.value for member in states)
