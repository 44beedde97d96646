"""EPICS text signals whose descriptions are valid documents.

caproto reports the control limits of CHAR-waveform (long string) PVs as bytes
(``b"\\x00"``). Bytes are neither JSON (the journal) nor accepted by the catalogue, and
limits mean nothing for text, so these signals leave every bytes-valued key out of
``describe()``. Every ``string=True`` signal of bluestem's devices is one of these.
"""

from __future__ import annotations

from ophyd import EpicsSignal, EpicsSignalRO

__all__ = ["TextSignal", "TextSignalRO", "text_description"]


def text_description(description: dict[str, dict]) -> dict[str, dict]:
    """Drop bytes-valued entries from an ophyd ``describe()`` result (in place)."""
    for entry in description.values():
        for key in [k for k, v in entry.items() if isinstance(v, bytes)]:
            del entry[key]
    return description


class TextSignal(EpicsSignal):
    """A writable text PV (``string=True`` by default) with a document-safe description."""

    def __init__(self, read_pv, write_pv=None, *, string=True, **kwargs):
        super().__init__(read_pv, write_pv, string=string, **kwargs)

    def describe(self):
        return text_description(super().describe())


class TextSignalRO(EpicsSignalRO):
    """A read-only text PV (``string=True`` by default) with a document-safe description."""

    def __init__(self, read_pv, *, string=True, **kwargs):
        super().__init__(read_pv, string=string, **kwargs)

    def describe(self):
        return text_description(super().describe())
