"""The specimen registry: every specimen by name, and :func:`make_specimen`.

This module imports the specimen modules and builds the table from their classes; none
of them imports it back, so the registry is complete whenever it can be imported and has
no import-time side effects on other modules.
"""

from __future__ import annotations

from typing import Any

from bluestem.twin.crystal import Grains, SrTiO3
from bluestem.twin.nanoparticles import Nanoparticles
from bluestem.twin.specimen import PhaseRamp, Specimen, Vacuum

__all__ = ["SPECIMENS", "make_specimen"]

#: name -> specimen class.
SPECIMENS: dict[str, type[Specimen]] = {
    cls.name: cls for cls in (Vacuum, PhaseRamp, SrTiO3, Nanoparticles, Grains)
}


def make_specimen(name: str, **kw: Any) -> Specimen:
    """Build a specimen by registry name.

    Parameters
    ----------
    name : str
        A key of :data:`SPECIMENS`, e.g. ``"srtio3"``.
    **kw
        The specimen's parameters (see docs/twin.md).

    Returns
    -------
    Specimen

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the names) or a parameter is bad.
    """
    try:
        cls = SPECIMENS[name]
    except KeyError:
        raise ValueError(
            f"unknown specimen {name!r}; allowed: {', '.join(sorted(SPECIMENS))}"
        ) from None
    try:
        return cls(**kw)
    except TypeError as exc:
        raise ValueError(f"bad parameters for specimen {name!r}: {exc}") from None
