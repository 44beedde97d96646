"""Frames replayed from a 4D file: the frame source of ``bluestem ioc replay``.

:class:`ReplaySource` serves the frames of a stored acquisition — bluestem's own file,
or any HDF5 / EMD 4D dataset (:mod:`bluestem.ioc.file_frames`) — as the detector's: the
engine paces them at the scan's dwell (or the series' period; ``--max-rate``: as fast as
the frame path allows), so the whole pipeline (file, documents, live reduction,
catalogue) runs on real data. Frame *i* of an acquisition is frame *i* of the file in
storage order, going round it when the raster is longer; the detector's size is the
file's frame and its counter clips the counts (a counter saturates).
"""

from __future__ import annotations

import math

import numpy as np

from bluestem.instrument import dtype_of_depth

from .file_frames import FileFrames
from .source import FrameRecipe, Readback

__all__ = ["ReplaySource", "depth_of_dtype"]


def depth_of_dtype(dtype) -> int:
    """The counter depth whose frames hold ``dtype``'s values: uint8 6, uint16 12,
    uint32 24 (ValueError for any other, naming it)."""
    depths = {np.dtype(np.uint8): 6, np.dtype(np.uint16): 12, np.dtype(np.uint32): 24}
    found = depths.get(np.dtype(dtype))
    if found is None:
        raise ValueError(f"frames of {np.dtype(dtype)}: allowed uint8, uint16 or uint32 "
                         "counts (what a counting detector records)")  # fmt: skip
    return found


class ReplaySource:
    """A :class:`~bluestem.ioc.source.FrameSource` of the frames in ``path``.

    Parameters
    ----------
    path : path
        The file (``--file``).
    """

    def __init__(self, path):
        self.frames = FileFrames(path, option="--file")
        self.depth = depth_of_dtype(self.frames.dtype)
        self.sensor = self.frames.frame_shape
        self.total = int(math.prod(self.frames.scan_shape))

    def recipe(self, readback: Readback, *, number: int) -> FrameRecipe:
        det = readback.detector
        shape, binning = tuple(det["shape"]), int(det["binning"])
        if shape != self.sensor or binning != 1:
            raise ValueError(
                f"frames of {shape[1]}x{shape[0]} binned {binning}: the replayed file holds "
                f"{self.sensor[1]}x{self.sensor[0]} (allowed: DET:cam1:SizeX "
                f"{self.sensor[1]}, SizeY {self.sensor[0]}, BinX 1)"
            )
        depth = int(det["counter_depth"])
        dtype = dtype_of_depth(depth)
        params = {"source": "replay", "file": str(self.frames.path.resolve()),
                  "dataset": self.frames.dataset, "file_frames": self.total,
                  "file_scan_shape": list(self.frames.scan_shape)}  # fmt: skip

        def prepare():
            def render(first: int, count: int) -> np.ndarray:
                return self.frames.frames(first, count, depth).astype(dtype, copy=False)

            return render

        return FrameRecipe(prepare=prepare, parameters=params, metadata={"replay": params})
