"""Compile the reduction's numba kernels before frames arrive (see ``LiveReduction``)."""

from __future__ import annotations

import numpy as np

__all__ = ["compile_kernels"]


def compile_kernels(dtype: np.dtype) -> bool:
    """Run the reduction and checksum kernels once on a few frames of ``dtype`` (numba
    compiles, or loads from its cache, at the first call per dtype); False for a dtype
    the reducer does not take (it refuses it later, with its reason)."""
    from bluestem.frames._fletcher import fletcher32_u8
    from bluestem.reduce import DTYPES, Reducer, ReductionSpec

    if dtype not in DTYPES:
        return False
    frames = np.ones((8, 16, 16), dtype=dtype)
    Reducer(ReductionSpec.default((16, 16)), (1, 8)).add(0, frames)
    fletcher32_u8(frames.view(np.uint8).ravel())
    return True
