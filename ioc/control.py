"""What the PV groups may ask of the instrument: the :class:`Controller` protocol.

A group owns its PVs; when a put asks for more than its own PVs (open a file while frames
are being produced? start the scan?) it asks its controller, which it was given at
construction (:meth:`bluestem.ioc.settings.SettingsGroup.attach`). The groups depend on
this protocol only, never on :class:`bluestem.ioc.instrument.Instrument`, which is the one
implementation: it runs the acquisition engine and tells the groups what happened.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Controller"]


class Controller(Protocol):
    """The instrument as its PV groups see it.

    Every coroutine may raise :class:`~bluestem.ioc.validation.InvalidSetting`: the put
    that asked is then refused with that message.
    """

    @property
    def busy(self) -> bool:
        """True while a file is open or frames are being produced (settings are locked)."""
        ...

    async def open_capture(self) -> None:
        """``HDF1:Capture=1``: open a new file (a no-op while one is open)."""
        ...

    async def close_capture(self) -> None:
        """``HDF1:Capture=0``: close the file (ends a running acquisition first)."""
        ...

    async def start_acquire(self) -> None:
        """``cam1:Acquire=1``: arm for the scan (External) or record a series (Internal)."""
        ...

    async def stop_acquire(self) -> None:
        """``cam1:Acquire=0``: disarm, or end the running acquisition."""
        ...

    async def start_scan(self) -> None:
        """``SCAN:Start=1``: run the scan (refused while one runs)."""
        ...

    async def stop_scan(self, *, abort: bool) -> None:
        """``SCAN:Stop=1`` (keep what was written) or ``SCAN:Abort=1`` (``abort=True``)."""
        ...

    def hold_scan(self, on: bool) -> None:
        """``SCAN:Pause``: hold a running scan at its next row boundary, or go on."""
        ...

    def beam_blanked(self, on: bool) -> None:
        """``MIC:BeamBlank``: frames from now on carry no dose (``on``) or do again."""
        ...
