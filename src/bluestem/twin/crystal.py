"""Crystalline specimens: SrTiO3 [001] and a polycrystal of SrTiO3 grains."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from bluestem.twin.atoms import (
    AtomField,
    AtomSpecimen,
    atom_potential,
    check_multislice,
    check_positive,
)
from bluestem.twin.slices import SliceStack

__all__ = ["SRTIO3_LATTICE", "Grains", "SrTiO3"]

#: Cubic lattice parameter of SrTiO3 (m).
SRTIO3_LATTICE = 3.905e-10
#: Fractional positions (y, x) in the [001]-projected cell and atomic numbers per column:
#: Sr at the corner, the Ti-O column at the centre, pure O columns at the edge centres.
_COLUMNS = (
    ((0.0, 0.0), (38,)),
    ((0.5, 0.5), (22, 8)),
    ((0.0, 0.5), (8,)),
    ((0.5, 0.0), (8,)),
)

#: The two (001) planes of the cell, (fractional (y, x), Z) per atom: SrO at z = 0 and
#: TiO2 at z = a / 2. Projected together they are the columns above.
_PLANES = (
    (((0.0, 0.0), 38), ((0.5, 0.5), 8)),
    (((0.5, 0.5), 22), ((0.0, 0.5), 8), ((0.5, 0.0), 8)),
)


def _cell_columns(thickness: float, lattice: float) -> tuple[np.ndarray, np.ndarray]:
    """Fractional positions (4, 2) and peak potentials (4,) of the SrTiO3 columns."""
    cells = thickness / lattice
    frac = np.array([c[0] for c in _COLUMNS])
    peak = np.array([cells * sum(atom_potential(z) for z in c[1]) for c in _COLUMNS])
    return frac, peak


def _cell_slices(slices_per_cell: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fractional positions and peak potentials of each slice of one cell: the two
    atomic planes (2 slices per cell) or the projected cell (1 slice)."""
    if slices_per_cell == 1:
        return [_cell_columns(1.0, 1.0)]
    return [
        (np.array([a[0] for a in plane]), np.array([atom_potential(a[1]) for a in plane]))
        for plane in _PLANES
    ]


def _check_slicing(spec) -> None:
    check_multislice(spec)
    if spec.slices_per_cell not in (1, 2):
        raise ValueError(
            f"slices_per_cell must be 1 (projected cells) or 2 (atomic planes), "
            f"got {spec.slices_per_cell!r}"
        )


@dataclass(frozen=True)
class SrTiO3(AtomSpecimen):
    """SrTiO3 viewed along [001], periodic.

    Cache: positions are reduced to fractional cell coordinates and rounded to 1/32 of the
    cell (a position quantum of a / 32 = 0.122 Å, part of the model), so a scan gives at
    most 1024 distinct noiseless frames (in both modes).

    Parameters
    ----------
    thickness : float
        Specimen thickness in m (sets the column potentials; in multislice, rounded to
        whole slices, at least one).
    lattice : float
        Cubic lattice parameter in m.
    atom_width : float
        Gaussian width (standard deviation, m) of a projected column.
    multislice : bool
        Render by multislice (True) instead of as a phase object (False, the default).
    slices_per_cell : int
        Multislice slicing: 2 = the SrO and TiO2 atomic planes (a / 2 thick), 1 = the
        projected cell (a thick).
    tilt : tuple of float
        (theta_y, theta_x) beam tilt off [001] in rad (multislice only).
    """

    name: ClassVar[str] = "srtio3"
    quantum: ClassVar[int] = 32
    thickness: float = 1.6e-9
    lattice: float = SRTIO3_LATTICE
    atom_width: float = 0.35e-10
    multislice: bool = False
    slices_per_cell: int = 2
    tilt: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        check_positive("thickness", self.thickness, "m")
        check_positive("lattice", self.lattice, "m")
        check_positive("atom_width", self.atom_width, "m")
        _check_slicing(self)

    @property
    def cell(self) -> tuple[float, float]:
        """The projected unit cell (y, x) in m (the period of the frames)."""
        return (self.lattice, self.lattice)

    @cached_property
    def atoms(self) -> AtomField:
        """The columns of one cell as a periodic field."""
        frac, peak = _cell_columns(self.thickness, self.lattice)
        a = self.lattice
        return AtomField.build((a, a), frac[:, 0] * a, frac[:, 1] * a, peak, self.atom_width)

    @cached_property
    def slice_fields(self) -> tuple[AtomField, ...]:
        """The distinct slices of one cell, entrance first, as periodic fields."""
        a = self.lattice
        return tuple(
            AtomField.build((a, a), frac[:, 0] * a, frac[:, 1] * a, peak, self.atom_width)
            for frac, peak in _cell_slices(self.slices_per_cell)
        )

    def slice_stack(self, thickness=None):
        t = self.thickness if thickness is None else check_positive("thickness", thickness, "m")
        dz = self.lattice / self.slices_per_cell
        return SliceStack.periodic(self.slice_fields, max(1, round(t / dz)), dz, self.tilt)

    def canonical(self, y, x, grid):
        q = self.quantum
        iy = np.mod(np.rint(np.asarray(y, np.float64) / self.lattice * q), q).astype(np.int64)
        ix = np.mod(np.rint(np.asarray(x, np.float64) / self.lattice * q), q).astype(np.int64)
        return iy * q + ix, iy * (self.lattice / q), ix * (self.lattice / q)


@dataclass(frozen=True)
class Grains(AtomSpecimen):
    """Polycrystalline SrTiO3 [001]: Voronoi grains with in-plane rotations, one strained.

    The grain map is a periodic Voronoi tessellation of a square field; grain 0 has its
    lattice scaled by ``1 + strain``. The rotated lattices are not periodic with the field,
    so its edges look like one more grain boundary. Cache: positions rounded to the
    simulation sampling.

    Parameters
    ----------
    grains : int
        Number of grains (>= 1).
    field : float
        Period of the grain map in m.
    strain : float
        Isotropic strain of grain 0 (lattice scaled by 1 + strain), |strain| < 0.5.
    thickness, atom_width : float
        As for ``srtio3`` (m).
    seed : int
        Seed of the grain seeds and orientations.
    multislice, slices_per_cell, tilt
        As for ``srtio3``; every grain is sliced with the unstrained spacing.
    """

    name: ClassVar[str] = "grains"
    grains: int = 5
    field: float = 12e-9
    strain: float = 0.02
    thickness: float = 1.6e-9
    atom_width: float = 0.35e-10
    seed: int = 0
    multislice: bool = False
    slices_per_cell: int = 2
    tilt: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if not isinstance(self.grains, int) or self.grains < 1:
            raise ValueError(f"grains must be an integer >= 1, got {self.grains!r}")
        check_positive("field", self.field, "m")
        check_positive("thickness", self.thickness, "m")
        check_positive("atom_width", self.atom_width, "m")
        if not (math.isfinite(self.strain) and abs(self.strain) < 0.5):
            raise ValueError(f"strain must be in (-0.5, 0.5), got {self.strain!r}")
        _check_slicing(self)

    @cached_property
    def layout(self) -> tuple[np.ndarray, np.ndarray]:
        """Grain seeds (grains, 2) in m and in-plane rotations (grains,) in rad."""
        rng = np.random.default_rng(self.seed)
        seeds = rng.uniform(0.0, self.field, size=(self.grains, 2))
        angles = rng.uniform(0.0, math.pi / 2, size=self.grains)
        return seeds, angles

    def grain_of(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Index of the grain (nearest seed, periodic) at positions (y, x) in m."""
        seeds, _ = self.layout
        L = self.field
        d = np.stack([np.asarray(y, np.float64), np.asarray(x, np.float64)], -1)[..., None, :]
        d = d - seeds
        d -= L * np.rint(d / L)
        return np.argmin((d**2).sum(-1), axis=-1)

    @cached_property
    def atoms(self) -> AtomField:
        """Columns of every grain inside the periodic field."""
        return self._field(*_cell_columns(self.thickness, SRTIO3_LATTICE))

    @cached_property
    def slice_fields(self) -> tuple[AtomField, ...]:
        """The distinct slices (atomic planes or projected cells) of every grain."""
        return tuple(self._field(frac, peak) for frac, peak in _cell_slices(self.slices_per_cell))

    def slice_stack(self, thickness=None):
        t = self.thickness if thickness is None else check_positive("thickness", thickness, "m")
        dz = SRTIO3_LATTICE / self.slices_per_cell
        return SliceStack.periodic(self.slice_fields, max(1, round(t / dz)), dz, self.tilt)

    def _field(self, frac: np.ndarray, peak: np.ndarray) -> AtomField:
        """Sites (fractional positions, peak potentials) of a cell repeated in every grain."""
        seeds, angles = self.layout
        L = self.field
        ys, xs, ps = [], [], []
        for g in range(self.grains):
            a = SRTIO3_LATTICE * (1.0 + self.strain if g == 0 else 1.0)
            n = math.ceil(L * math.sqrt(2) / a) + 1
            m = np.arange(-n, n + 1)
            cy, cx = np.meshgrid(m, m, indexing="ij")
            cell = np.stack([cy.ravel(), cx.ravel()], -1)[:, None, :] + frac[None]
            c, s = math.cos(angles[g]), math.sin(angles[g])
            py = a * (c * cell[..., 0] + s * cell[..., 1]) + seeds[g, 0]
            px = a * (-s * cell[..., 0] + c * cell[..., 1]) + seeds[g, 1]
            py, px = py.ravel(), px.ravel()
            pk = np.broadcast_to(peak, cell.shape[:2]).ravel()
            keep = (np.abs(py - seeds[g, 0]) < L / 2) & (np.abs(px - seeds[g, 1]) < L / 2)
            py, px, pk = py[keep], px[keep], pk[keep]
            mine = self.grain_of(np.mod(py, L), np.mod(px, L)) == g
            ys.append(py[mine])
            xs.append(px[mine])
            ps.append(pk[mine])
        return AtomField.build(
            (L, L), np.concatenate(ys), np.concatenate(xs), np.concatenate(ps), self.atom_width
        )
