"""Gold nanoparticles on an amorphous carbon support."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from bluestem.twin.atoms import AtomField, AtomSpecimen, atom_potential, check_positive

__all__ = ["GOLD_LATTICE", "Nanoparticles"]

#: fcc lattice parameter of gold (m).
GOLD_LATTICE = 4.078e-10


@dataclass(frozen=True)
class Nanoparticles(AtomSpecimen):
    """Au particles (fcc [001] projected columns inside circles) on amorphous carbon.

    The carbon is a seeded random set of C atoms of a given areal density; each particle is
    a sphere of gold seen along [001]: columns on a square lattice of spacing a / 2, each
    holding ``round(chord / a)`` atoms (at least one). The field is periodic. Cache:
    positions rounded to the simulation sampling.

    Parameters
    ----------
    particles : int
        Number of Au particles (>= 0).
    radius : tuple of float
        (min, max) particle radius in m; radii are drawn uniformly.
    carbon_density : float
        C atoms per m**2 of support (5e19 is about a 0.5 nm film).
    field : float
        Period of the specimen in m.
    atom_width : float
        Gaussian width (standard deviation, m) of an atom or column.
    seed : int
        Seed of the carbon atoms and of the particle positions, sizes and orientations.
    """

    name: ClassVar[str] = "nanoparticles"
    particles: int = 5
    radius: tuple[float, float] = (1.0e-9, 2.5e-9)
    carbon_density: float = 5e19
    field: float = 12e-9
    atom_width: float = 0.35e-10
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.particles, int) or self.particles < 0:
            raise ValueError(f"particles must be an integer >= 0, got {self.particles!r}")
        try:
            r_lo, r_hi = (float(r) for r in self.radius)
        except (TypeError, ValueError):
            raise ValueError(f"radius must be (min, max) in m, got {self.radius!r}") from None
        if not (0 < r_lo <= r_hi < self.field / 2):
            raise ValueError(
                f"radius must satisfy 0 < min <= max < field / 2 = {self.field / 2!r} m, "
                f"got {self.radius!r}"
            )
        object.__setattr__(self, "radius", (r_lo, r_hi))
        if not (math.isfinite(self.carbon_density) and 0 <= self.carbon_density <= 1e21):
            raise ValueError(
                f"carbon_density must be in [0, 1e21] atoms/m**2, got {self.carbon_density!r}"
            )
        check_positive("field", self.field, "m")
        check_positive("atom_width", self.atom_width, "m")

    @cached_property
    def layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Particle centres (particles, 2) in m, radii (m) and lattice rotations (rad)."""
        rng = np.random.default_rng([self.seed, 1])
        centres = rng.uniform(0.0, self.field, size=(self.particles, 2))
        radii = rng.uniform(*self.radius, size=self.particles)
        angles = rng.uniform(0.0, math.pi / 2, size=self.particles)
        return centres, radii, angles

    @cached_property
    def atoms(self) -> AtomField:
        """Carbon atoms and gold columns in the periodic field."""
        L = self.field
        rng = np.random.default_rng([self.seed, 0])
        n_carbon = round(self.carbon_density * L * L)
        ys = [rng.uniform(0.0, L, n_carbon)]
        xs = [rng.uniform(0.0, L, n_carbon)]
        ps = [np.full(n_carbon, atom_potential(6))]
        a = GOLD_LATTICE
        for (cy, cx), r, angle in zip(*self.layout, strict=True):
            n = math.ceil(2 * r / a) + 1
            m = np.arange(-n, n + 1) * (a / 2)
            gy, gx = (g.ravel() for g in np.meshgrid(m, m, indexing="ij"))
            rho2 = gy**2 + gx**2
            inside = rho2 < r * r
            gy, gx, rho2 = gy[inside], gx[inside], rho2[inside]
            atoms = np.maximum(1.0, np.rint(2.0 * np.sqrt(r * r - rho2) / a))
            c, s = math.cos(angle), math.sin(angle)
            ys.append(cy + c * gy + s * gx)
            xs.append(cx - s * gy + c * gx)
            ps.append(atoms * atom_potential(79))
        return AtomField.build(
            (L, L), np.concatenate(ys), np.concatenate(xs), np.concatenate(ps), self.atom_width
        )
