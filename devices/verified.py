"""A setting whose ``set()`` is only done when the hardware's readback agrees.

Every setting of the instrument is a setpoint PV plus a read-only ``_RBV`` holding what
the hardware really applied. :class:`VerifiedSetting` writes the setpoint (waiting for
put completion), then polls the readback until it is within the setting's tolerance or a
timeout passes; otherwise the status fails with :class:`ReadbackMismatch`, naming the
setting, the request and the readback. A plan that sets something therefore never goes
on believing a value the hardware did not take.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Kind
from ophyd.status import DeviceStatus

from .put_errors import put_checked
from .text import TextSignal, TextSignalRO
from .threaded import status_of_thread

__all__ = [
    "ReadbackMismatch",
    "VerifiedEnum",
    "VerifiedSetting",
    "VerifiedText",
    "readback_matches",
]


class ReadbackMismatch(RuntimeError):
    """The readback of a setting did not reach the requested value in time."""

    def __init__(self, setting: str, request: Any, readback: Any, tolerance: str, timeout: float):
        self.setting, self.request, self.readback = setting, request, readback
        super().__init__(
            f"{setting}: requested {request!r}, read back {readback!r} "
            f"(allowed {tolerance}) after {timeout:g} s"
        )


def readback_matches(request: Any, readback: Any, *, atol: float = 0.0, rtol: float = 0.0) -> bool:
    """Whether ``readback`` is the applied value of ``request``.

    Numbers agree when ``|readback - request| <= atol + rtol * |request|``; anything else
    (enum strings) must be equal. NaN never agrees.
    """
    if isinstance(request, str) or isinstance(readback, str):
        return str(request) == str(readback)
    req, rb = float(request), float(readback)
    if math.isnan(req) or math.isnan(rb):
        return False
    return abs(rb - req) <= atol + rtol * abs(req)


class VerifiedSetting(Device):
    """A setpoint ``PFX:NAME`` with its readback ``PFX:NAME_RBV``, verified on ``set()``.

    Parameters
    ----------
    prefix : str
        Full PV name of the setpoint (the readback appends ``_RBV``).
    atol, rtol : float
        Tolerance of the readback: ``atol + rtol * |request|`` in the PV's units. Documented
        per setting in docs/devices.md (half the hardware quantum, plus rounding slack).
    timeout : float
        Seconds to wait for the readback after the put completed.
    """

    setpoint = Cpt(EpicsSignal, "", kind=Kind.config)
    readback = Cpt(EpicsSignalRO, "_RBV", kind=Kind.hinted | Kind.config)
    enum = False

    def __init__(
        self,
        prefix: str = "",
        *,
        atol: float = 0.0,
        rtol: float = 0.0,
        timeout: float = 2.0,
        **kwargs,
    ):
        super().__init__(prefix, **kwargs)
        if atol < 0 or rtol < 0 or not timeout > 0:
            raise ValueError(
                f"tolerance atol={atol}, rtol={rtol}, timeout={timeout}: allowed atol >= 0, "
                "rtol >= 0, timeout > 0"
            )
        self.atol, self.rtol, self.verify_timeout = atol, rtol, timeout
        #: The last value this process asked for with ``set()`` (None: never): a
        #: suspender tells the session's own blanking (a dark reference) from another's.
        self.requested: Any = None
        # The readback carries the setting's own name in read(): ``mic_defocus``.
        self.readback.name = self.name

    @property
    def setting(self) -> str:
        """The setting's PV name without the ``_RBV`` (used in error messages)."""
        return self.setpoint.pvname

    def tolerance_text(self) -> str:
        """The tolerance in words, for :class:`ReadbackMismatch` (``"±0.0501"``)."""
        parts = [f"±{self.atol:g}"] if self.atol else []
        if self.rtol:
            parts.append(f"{self.rtol:g}×|request|")
        return " + ".join(parts) or "exactly"

    def _normalise(self, value: Any) -> Any:
        return value

    def get(self, **kwargs) -> Any:
        """The readback (what the hardware applied)."""
        return self.readback.get(**kwargs)

    def verify(self, request: Any, timeout: float | None = None) -> Any:
        """Poll the readback until it matches ``request``; return it or raise
        :class:`ReadbackMismatch`."""
        timeout = self.verify_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            value = self.readback.get(use_monitor=False)
            if readback_matches(request, value, atol=self.atol, rtol=self.rtol):
                return value
            if time.monotonic() > deadline:
                raise ReadbackMismatch(
                    self.setting, request, value, self.tolerance_text(), timeout
                )
            time.sleep(0.02)

    def set(self, value: Any, **kwargs) -> DeviceStatus:
        """Write ``value``, wait for put completion, then verify the readback.

        The returned status fails at once with the IOC's refusal
        (:class:`~bluestem.devices.put_errors.PutRefused`, naming the PV and the IOC's
        reason) or with :class:`ReadbackMismatch`.
        """
        request = self._normalise(value)
        self.requested = request

        def work():
            put_checked(self.setpoint, request, timeout=self.verify_timeout + 5.0)
            self.verify(request)

        return status_of_thread(self, work, "verify")


class VerifiedEnum(VerifiedSetting):
    """A verified enum setting (``TriggerMode``, ``Compression``, ``BeamBlank``...):
    states compared as strings; an integer request is mapped to the state's name."""

    setpoint = Cpt(TextSignal, "", kind=Kind.config)
    readback = Cpt(TextSignalRO, "_RBV", kind=Kind.hinted | Kind.config)
    enum = True

    def tolerance_text(self) -> str:
        """``"the same state"``."""
        return "the same state"

    def _normalise(self, value: Any) -> Any:
        if isinstance(value, str):
            return str(value)  # a StrEnum member (bluestem.instrument) as its PV string
        states = self.setpoint.enum_strs or ()
        index = int(value)
        if not 0 <= index < len(states):
            raise ValueError(f"{self.setting}: state {value!r}, allowed {list(states)}")
        return states[index]


class VerifiedText(VerifiedSetting):
    """A verified text setting (a directory, a file name, a file template): the readback
    must be the same text. A non-string request is written as its ``str()``."""

    setpoint = Cpt(TextSignal, "", kind=Kind.config)
    readback = Cpt(TextSignalRO, "_RBV", kind=Kind.hinted | Kind.config)

    def tolerance_text(self) -> str:
        """``"the same text"``."""
        return "the same text"

    def _normalise(self, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
