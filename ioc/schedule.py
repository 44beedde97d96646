"""When and how many frames one acquisition produces, and in which blocks."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BLOCK_BYTES", "BLOCK_SECONDS", "FrameSchedule"]

# Bytes of frames rendered per block: big enough that per-block Python overhead is
# negligible, small enough that a few blocks in the writer queue stay well under a GB.
BLOCK_BYTES = 8 * 1024**2
# Longest a paced block may take, so progress and Stop stay responsive at slow dwells.
BLOCK_SECONDS = 0.1


@dataclass(frozen=True)
class FrameSchedule:
    """When and how many frames one acquisition produces.

    Parameters
    ----------
    n_frames : int
        Frames to produce, flat indices ``0 .. n_frames - 1``.
    row_length : int
        Frames per scan row (flyback is spent at the start of each row).
    period : float
        Seconds per frame; 0 means no pacing (max rate).
    flyback : float
        Seconds spent at the start of each row (ignored when ``period`` is 0).
    frame_bytes : int
        Size of one frame, to size the render blocks.
    """

    n_frames: int
    row_length: int
    period: float = 0.0
    flyback: float = 0.0
    frame_bytes: int = 1

    def block_frames(self) -> int:
        """Frames per render block."""
        block = max(1, BLOCK_BYTES // max(1, self.frame_bytes))
        if self.period > 0:
            block = max(1, min(block, int(BLOCK_SECONDS / self.period)))
        if block >= self.row_length:
            # Whole rows keep the writer's row chunks complete per submit.
            block -= block % self.row_length
        return max(1, min(block, self.n_frames))

    def elapsed(self, count: int) -> float:
        """Seconds from the start until frame ``count - 1`` is complete."""
        if self.period <= 0:
            return 0.0
        rows = math.ceil(count / self.row_length) if self.row_length else 0
        return count * self.period + rows * self.flyback
