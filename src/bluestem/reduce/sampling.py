"""Does a raster's step sample the specimen's lattice? Warnings a microscopist can act on.

A scan step of at least half the lattice period aliases the lattice (Nyquist): the
virtual images show a moiré and a centre-of-mass field whose DPC rotation cannot be
estimated. Between half and a quarter of the period the lattice is resolved but coarse.
The period comes from the start document's ``lattice_period_nm`` (set it for any
specimen), else from :data:`KNOWN_LATTICES` by the ``sample`` name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["KNOWN_LATTICES", "lattice_period_nm", "sampling_problems"]

#: Shortest period of the projected lattice (nm) along the usual zone axis, by sample
#: name (lower case): the spacing a raster must sample to show it.
KNOWN_LATTICES: dict[str, tuple[float, str]] = {
    "srtio3": (0.3905, "SrTiO3 [001], cubic a = 0.3905 nm"),
    "batio3": (0.4000, "BaTiO3 [001], a = 0.400 nm"),
    "au": (0.2039, "Au [001] projected, a / 2 = 0.204 nm"),
    "si": (0.3840, "Si [110] projected, a / sqrt(2) = 0.384 nm"),
}

# Fewer samples per period than this: resolved, but too coarse to see atom columns.
SAMPLES_PER_PERIOD = 4


def lattice_period_nm(start: Mapping[str, Any]) -> tuple[float, str] | None:
    """``(period, what)`` for a run's specimen, or None when it is not known."""
    given = start.get("lattice_period_nm")
    if given is not None:
        try:
            period = float(given)
        except (TypeError, ValueError):
            return None
        return (period, f"lattice_period_nm = {period:g} nm") if period > 0 else None
    for key in ("sample", "specimen"):
        name = str(start.get(key, "")).strip().lower()
        if name in KNOWN_LATTICES:
            return KNOWN_LATTICES[name]
    return None


def sampling_problems(start: Mapping[str, Any]) -> list[str]:
    """Why a raster's step (``start["scan"]["step"]``, nm) cannot show the lattice of its
    specimen, in words naming the step and the period; empty when it can or when the
    period is unknown."""
    known = lattice_period_nm(start)
    step = (start.get("scan") or {}).get("step")
    if known is None or not step:
        return []
    period, what = known
    coarsest = max(float(s) for s in step)
    if coarsest >= period / 2:
        return [
            f"the scan step {coarsest:.4g} nm undersamples the lattice ({what}): at least "
            f"half the period aliases it (moiré; no DPC rotation can be estimated); use a "
            f"step below {period / SAMPLES_PER_PERIOD:.3g} nm, e.g. fov= or step= in the plan"
        ]
    if coarsest > period / SAMPLES_PER_PERIOD:
        return [
            f"the scan step {coarsest:.4g} nm gives fewer than {SAMPLES_PER_PERIOD} samples "
            f"per lattice period ({what}): atom columns will blur; use a step of at most "
            f"{period / SAMPLES_PER_PERIOD:.3g} nm"
        ]
    return []
