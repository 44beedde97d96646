"""The instrument's status board: what ``STATUS`` and ``STATUS:Message`` say.

Each group flags a refused write on the board (one flag per PV) and clears it when the PV
next takes a write; the instrument posts a fault when an acquisition fails. The board
decides the health and the message; its owner (the instrument, which owns the two PVs)
publishes them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable

from bluestem.instrument import Health

__all__ = ["StatusBoard", "error_text", "wire_text"]

#: Longest ``STATUS:Message`` text (a 256-character CHAR waveform, NUL-terminated).
MESSAGE_LENGTH = 255


def wire_text(text: str, length: int = MESSAGE_LENGTH) -> str:
    """``text`` as a message PV can hold it: at most ``length`` characters, Latin-1.

    caproto encodes CHAR waveforms as Latin-1; one character outside it (an ellipsis, a
    Greek letter) makes every later read of the PV fail (``CaprotoConversionError``), so
    such characters become ``?``.
    """
    return text.encode("latin-1", "replace").decode("latin-1")[:length]


def error_text(exc: BaseException) -> str:
    """A one-line account of ``exc`` for a message PV.

    An operating-system error (HDF5 passes ``errno`` through: ENOSPC, EIO, EROFS ...)
    leads with what the system said and its symbol, then HDF5's first clause, without the
    multi-line detail HDF5 appends (a timestamp, the descriptor), which the PV would cut:
    ``No space left on device (ENOSPC): Can't write unprocessed chunk data``.
    """
    if isinstance(exc, OSError) and exc.errno:
        name = errno.errorcode.get(exc.errno, f"errno {exc.errno}")
        detail = str(exc.strerror or "").split(" (", 1)[0].strip()
        said = os.strerror(exc.errno)
        text = f"{said} ({name})"
        if detail and detail != said:
            text += f": {detail}"
        if exc.filename:
            text += f" ({exc.filename})"
        return text
    return " ".join(str(exc).split()) or type(exc).__name__


class StatusBoard:
    """Flags of refused writes and the instrument's fault, published as one health.

    Parameters
    ----------
    publish : async callable
        ``publish(health, message)``: called whenever the health or message may have
        changed (``message`` at most 255 characters).

    Notes
    -----
    The health is ``FAULT`` (with the fault's message) once a fault is posted, until it
    is acknowledged; else ``PAUSED`` while a scan is held; else ``WARN`` while any flag is
    up (with the newest message); else ``OK``.
    """

    def __init__(self, publish: Callable[[Health, str], Awaitable[None]]) -> None:
        self._publish = publish
        self._flags: dict[str, str] = {}
        self._fault: str | None = None
        self._held: str | None = None

    def is_flagged(self, pv: str) -> bool:
        """True while ``pv`` (a full PV name) carries a flag."""
        return pv in self._flags

    async def flag(self, pv: str, message: str) -> None:
        """Flag a refused write on ``pv``; ``message`` becomes ``STATUS:Message``."""
        self._flags[pv] = message
        await self._update(message)

    async def clear(self, pv: str) -> None:
        """Take down the flag of ``pv`` (a no-op when it has none)."""
        if self._flags.pop(pv, None) is not None:
            await self._update()

    async def fault(self, message: str) -> None:
        """Post a fault: ``STATUS=FAULT`` with ``message`` until acknowledged."""
        self._fault = message
        await self._update()

    async def hold(self, message: str | None) -> None:
        """A scan is held (``message`` says where and why) or goes on (None)."""
        if message != self._held:
            self._held = message
            await self._update()

    async def acknowledge(self) -> str | None:
        """The operator acknowledged the fault (``STATUS:Acknowledge``): it is cleared
        (the flags of refused writes stay). Returns the fault's message, or None."""
        fault, self._fault = self._fault, None
        await self._update()
        return fault

    def health(self, message: str | None = None) -> tuple[Health, str]:
        """The health and message now (``message``: the newest flag's, if just flagged)."""
        if self._fault:
            return Health.FAULT, self._fault
        if self._held:
            return Health.PAUSED, self._held
        if self._flags:
            return Health.WARN, message or next(reversed(self._flags.values()))
        return Health.OK, Health.OK.value

    async def _update(self, message: str | None = None) -> None:
        health, text = self.health(message)
        await self._publish(health, wire_text(text))
