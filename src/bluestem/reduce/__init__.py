"""Live and offline reductions of 4D-STEM frames: virtual detectors, COM and DPC.

``ReductionSpec`` says what to compute (virtual detectors, centre of mass, sum and max
patterns), ``Reducer`` computes it block by block with one fused numba pass over the
frames (GIL released), and the DPC functions turn the COM field into rotation-corrected
differential and integrated phase images. :mod:`bluestem.reduce.executors` says where the
frames of a run's announced blocks are reduced (this process, or a Dask cluster). See
docs/reduce.md.

Nothing happens at import time beyond defining the API, and the names are loaded lazily
(PEP 562): ``from bluestem.reduce import check_reductions`` (what the plans do) or
``import bluestem.reduce.spec`` loads no numba; ``Reducer`` does, and the kernels compile
on first use or load from numba's on-disk cache.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover (for type checkers and IDEs; loaded lazily below)
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

# Public name -> the submodule defining it.
_SOURCES = {
    "DTYPES": "reducer",
    "ReducedPart": "reducer",
    "Reducer": "reducer",
    "ReductionSpec": "spec",
    "RotationFit": "dpc",
    "VirtualDetector": "detectors",
    "check_reductions": "from_run",
    "ddpc": "dpc",
    "estimate_rotation": "dpc",
    "idpc": "dpc",
    "resolve_reductions": "from_run",
    "rotate_com": "dpc",
    "rotation_fit": "dpc",
    "run_spec": "from_run",
}

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


def __getattr__(name: str) -> Any:
    """Load a public name from its submodule at its first use (PEP 562)."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
