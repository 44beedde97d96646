"""Live and offline reductions of 4D-STEM frames: virtual detectors, COM and DPC.

``ReductionSpec`` says what to compute (virtual detectors, centre of mass, sum and max
patterns), ``Reducer`` computes it block by block with one fused numba pass over the
frames (GIL released), and the DPC functions turn the COM field into rotation-corrected
differential and integrated phase images. See docs/reduce.md.

Nothing happens at import time beyond defining the API: the kernels compile on first use
or load from numba's on-disk cache.
"""

from bluestem.reduce.detectors import VirtualDetector
from bluestem.reduce.dpc import (
    RotationFit,
    ddpc,
    estimate_rotation,
    idpc,
    rotate_com,
    rotation_fit,
)
from bluestem.reduce.from_run import check_reductions, resolve_reductions, run_spec
from bluestem.reduce.reducer import DTYPES, ReducedPart, Reducer
from bluestem.reduce.spec import ReductionSpec

__all__ = [
    "DTYPES",
    "ReducedPart",
    "Reducer",
    "ReductionSpec",
    "RotationFit",
    "VirtualDetector",
    "check_reductions",
    "ddpc",
    "estimate_rotation",
    "idpc",
    "resolve_reductions",
    "rotate_com",
    "rotation_fit",
    "run_spec",
]
