"""Gold nanoparticles on an amorphous carbon support."""

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

__all__ = ["GOLD_LATTICE", "Nanoparticles", "aggregates"]

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
    multislice : bool
        Render by multislice: the beam crosses the particles ((001) planes a / 2 apart,
        every particle resting on the support), then the carbon film as one slice.
    tilt : tuple of float
        (theta_y, theta_x) beam tilt in rad (multislice only).
    """

    name: ClassVar[str] = "nanoparticles"
    particles: int = 5
    radius: tuple[float, float] = (1.0e-9, 2.5e-9)
    carbon_density: float = 5e19
    field: float = 12e-9
    atom_width: float = 0.35e-10
    seed: int = 0
    multislice: bool = False
    tilt: tuple[float, float] = (0.0, 0.0)

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
        check_multislice(self)

    @cached_property
    def layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Particle centres (particles, 2) in m, radii (m) and lattice rotations (rad)."""
        rng = np.random.default_rng([self.seed, 1])
        centres = rng.uniform(0.0, self.field, size=(self.particles, 2))
        radii = rng.uniform(*self.radius, size=self.particles)
        angles = rng.uniform(0.0, math.pi / 2, size=self.particles)
        return centres, radii, angles

    def aggregates(self) -> tuple[np.ndarray, list[list[int]]]:
        """The features an image shows: :func:`aggregates` of :attr:`layout`."""
        centres, radii, _ = self.layout
        return aggregates(centres, radii, self.field)

    def _carbon(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        L = self.field
        rng = np.random.default_rng([self.seed, 0])
        n_carbon = round(self.carbon_density * L * L)
        y = rng.uniform(0.0, L, n_carbon)
        x = rng.uniform(0.0, L, n_carbon)
        return y, x, np.full(n_carbon, atom_potential(6))

    def _gold_columns(self):
        """Per particle: column positions (y, x), chord half-lengths, sublattice parity
        (0: planes at z = 0, a, ...; 1: at a / 2, 3a / 2, ...) and the radius."""
        a = GOLD_LATTICE
        for (cy, cx), r, angle in zip(*self.layout, strict=True):
            n = math.ceil(2 * r / a) + 1
            idx = np.arange(-n, n + 1)
            iy, ix = (g.ravel() for g in np.meshgrid(idx, idx, indexing="ij"))
            gy, gx = iy * (a / 2), ix * (a / 2)
            rho2 = gy**2 + gx**2
            inside = rho2 < r * r
            gy, gx, rho2 = gy[inside], gx[inside], rho2[inside]
            parity = (iy[inside] + ix[inside]) % 2
            c, s = math.cos(angle), math.sin(angle)
            yield cy + c * gy + s * gx, cx - s * gy + c * gx, np.sqrt(r * r - rho2), parity, r

    @cached_property
    def atoms(self) -> AtomField:
        """Carbon atoms and gold columns in the periodic field."""
        cy, cx, cp = self._carbon()
        ys, xs, ps = [cy], [cx], [cp]
        for py, px, half, _, _ in self._gold_columns():
            ys.append(py)
            xs.append(px)
            ps.append(np.maximum(1.0, np.rint(2.0 * half / GOLD_LATTICE)) * atom_potential(79))
        return AtomField.build(
            (self.field, self.field),
            np.concatenate(ys), np.concatenate(xs), np.concatenate(ps), self.atom_width,
        )  # fmt: skip

    @cached_property
    def slice_fields(self) -> tuple[AtomField, ...]:
        """The gold planes from the top (the beam's entrance) down, then the carbon."""
        dz = GOLD_LATTICE / 2
        field = (self.field, self.field)
        planes: list[list[np.ndarray]] = []
        for py, px, half, parity, r in self._gold_columns():
            # Plane p lies at height p dz above the support; the particle centre at r.
            top = np.floor((r + half) / dz).astype(np.int64)
            top -= (top - parity) % 2
            bottom = np.ceil((r - half) / dz).astype(np.int64)
            bottom += (bottom - parity) % 2
            # A column too short to hold a plane of its parity keeps one atom.
            nearest = np.rint((r / dz - parity) / 2).astype(np.int64) * 2 + parity
            empty = top < bottom
            top[empty] = bottom[empty] = nearest[empty]
            for p in range(int(top.max()) + 1 if top.size else 0):
                while len(planes) <= p:
                    planes.append([])
                on = (bottom <= p) & (p <= top) & ((p - parity) % 2 == 0)
                planes[p].append(np.stack([py[on], px[on]]))
        gold = [np.concatenate(plane, axis=1) if plane else np.empty((2, 0)) for plane in planes]
        fields = [
            AtomField.build(field, g[0], g[1], np.full(g.shape[1], atom_potential(79)),
                            self.atom_width)
            for g in reversed(gold)
        ]  # fmt: skip
        fields.append(AtomField.build(field, *self._carbon(), self.atom_width))
        return tuple(fields)

    def slice_stack(self, thickness=None):
        if thickness is not None:
            raise ValueError("nanoparticles: the thickness is set by the particles")
        fields = self.slice_fields
        return SliceStack(fields, np.arange(len(fields)), GOLD_LATTICE / 2, self.tilt)


def aggregates(centres, radii, field: float) -> tuple[np.ndarray, list[list[int]]]:
    """Touching particles as the one feature an image shows.

    Particles whose discs overlap (centre distance below the sum of the radii, on the
    periodic ``field``) join one aggregate, transitively; its centre is the centroid of
    their projected mass (weights r³, the columns' thickness summed over a disc), which
    is what the centroid of an ADF image measures.

    Parameters
    ----------
    centres : array (n, 2)
        Particle centres (y, x) in m, within ``0 .. field``.
    radii : array (n,)
        In m.
    field : float
        Side of the periodic field, m.

    Returns
    -------
    centres : ndarray (k, 2)
        Aggregate centres (y, x) in m, wrapped into ``0 .. field``.
    members : list of list of int
        The particles of each aggregate.
    """
    c, r = np.asarray(centres, float), np.asarray(radii, float)
    n = len(c)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def offset(i: int, j: int) -> np.ndarray:  # j - i, the nearest periodic image
        return (c[j] - c[i] + field / 2) % field - field / 2

    for i in range(n):
        for j in range(i + 1, n):
            if np.hypot(*offset(i, j)) < r[i] + r[j]:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    members = sorted(groups.values())
    out = np.empty((len(members), 2))
    for k, group in enumerate(members):
        first, w = group[0], r[group] ** 3
        # Unwrap around the first member through the chain of touching neighbours.
        placed = {first: c[first]}
        todo = [first]
        while todo:
            i = todo.pop()
            for j in group:
                if j not in placed and np.hypot(*offset(i, j)) < r[i] + r[j]:
                    placed[j] = placed[i] + offset(i, j)
                    todo.append(j)
        where = np.array([placed[i] for i in group])
        out[k] = (w @ where / w.sum()) % field
    return out, members
