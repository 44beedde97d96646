"""Which scan rows can be announced in a StreamDatum: pure bookkeeping, no I/O."""

from __future__ import annotations

__all__ = ["RowBatcher"]


class RowBatcher:
    """Turn the writer's frame counters into row ranges for StreamDatum documents.

    One event of the 4D stream is one scan row (``nx`` frames). A row is announced once
    every frame of it is accounted for: written (``NumCaptured_RBV``) or dropped
    (``DroppedFrames_RBV``, never delivered, zeros with ``received=0`` in the file).
    Frames arrive in order except *late* frames, which land after their successors: until
    a late frame arrives its row may be announced with that frame still zero; the file's
    ``received`` map is the record. When the acquisition has finished, the counters are
    final and cover every position the beam visited (the IOC counts a visited position
    whose frame is not in the file as dropped): every row up to the last one visited is
    announced, a partly visited last row included, so a scan stopped early announces just
    the rows it has.

    Parameters
    ----------
    rows, row_length : int
        Scan shape (ny, nx) for a raster; (n, 1) for a frame series.
    """

    def __init__(self, rows: int, row_length: int):
        if rows < 1 or row_length < 1:
            raise ValueError(f"rows={rows}, row_length={row_length}: allowed >= 1")
        self.rows, self.row_length = int(rows), int(row_length)
        self.announced = 0

    def ready(self, captured: int, dropped: int = 0, *, finished: bool = False) -> int:
        """Rows complete given the counters (never more than ``rows``)."""
        done = max(0, captured) + max(0, dropped)
        if finished:
            return min(self.rows, -(-done // self.row_length))
        return min(self.rows, done // self.row_length)

    def advance(
        self, captured: int, dropped: int = 0, *, finished: bool = False
    ) -> tuple[int, int] | None:
        """The next ``(start, stop)`` row range to announce, or None; remembers it."""
        stop = self.ready(captured, dropped, finished=finished)
        if stop <= self.announced:
            return None
        start, self.announced = self.announced, stop
        return start, stop
