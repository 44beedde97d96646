"""Frames scanned while the beam was blanked: withheld, and scanned again on resume.

A scan unit that drives the beam blanker knows which positions it scanned without dose.
Such frames are not a measurement: the acquisition engine does not deliver them, and a
scan held at a row boundary and resumed with the beam back goes on from the first row
holding one, delivering only those frames (the others are in the file already). Frames
still withheld when the acquisition ends are missing from the file: its received map
says so and the IOC counts them as dropped, so nothing records a dark frame as data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Withheld", "runs_of"]


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of True in the 1-D boolean ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


class Withheld:
    """Which of an acquisition's ``n`` frames were scanned while blanked (lazily
    allocated: a scan never blanked costs nothing)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self._mask: np.ndarray | None = None
        self.count = 0

    def mark(self, first: int, count: int, skip: np.ndarray | None) -> int:
        """Frames ``first .. first+count-1`` were scanned blanked (``skip``: the
        acquisition's own never-delivered frames, left out). Returns how many are new."""
        if self._mask is None:
            self._mask = np.zeros(self.n, dtype=bool)
        keep = np.ones(count, dtype=bool) if skip is None else ~skip[first : first + count]
        part = self._mask[first : first + count]
        new = int((keep & ~part).sum())
        part |= keep
        self.count += new
        return new

    def first_row_before(self, first: int, row: int) -> int | None:
        """Start of the first row before frame ``first`` holding a withheld frame."""
        if self._mask is None or not self.count:
            return None
        held = np.flatnonzero(self._mask[:first])
        return int(held[0]) // row * row if held.size else None

    def take(self, first: int, count: int) -> list[tuple[int, int]]:
        """The withheld runs of frames ``first .. first+count-1`` (offsets in the block),
        no longer withheld: they are being delivered."""
        if self._mask is None:
            return []
        part = self._mask[first : first + count]
        runs = runs_of(part)
        self.count -= int(part.sum())
        part[:] = False
        return runs
