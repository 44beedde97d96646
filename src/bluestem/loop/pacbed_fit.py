"""Specimen thickness from a position-averaged CBED (PACBED) pattern, in numpy.

Method
------
The measured PACBED (the sum of the frames of a scan over at least one unit cell) is
compared with simulated patterns of a library over thickness (LeBeau, Findlay, Allen &
Stemmer, "Position averaged convergent beam electron diffraction: theory and
applications", Ultramicroscopy 110, 118 (2010)):

1. **Alignment.** The library is mapped onto the measured detector by a similarity
   transform (:class:`Alignment`): a measured pixel ``p`` (row, column) sees the library
   at ``c_lib + s R(θ) (p − c)``, ``c`` the measured pattern's centre (the pixel of the
   optic axis), ``s`` library pixels per measured pixel, ``θ`` the rotation (from the
   column axis towards the row axis), ``c_lib = (fy // 2, fx // 2)`` the library's
   k = 0 pixel. Start: ``c`` from the centre of mass, then a grid over θ (5°) and s; then
   Nelder–Mead on (c, ln s, θ) maximising the normalised cross-correlation (NCC) with a
   reference pattern (the library mean, then the best entry). Bilinear interpolation,
   zero outside the library's frame.
2. **Goodness of fit** per library entry: Pearson's χ² of the measured counts ``m``
   against the aligned entry ``A M`` (amplitude ``A = Σm / ΣM``, the Poisson maximum
   likelihood), ``χ² = Σ (m − A M)² / (A M + 1)`` over the detector; reduced by the
   pixels that hold signal less the 6 fitted parameters. NCC per entry is recorded too.
3. **Thickness**: a least-squares parabola through χ² of the best entry and its
   neighbours (±3 entries), its vertex (kept inside that window); the uncertainty is
   ``sqrt(2 / χ²'' · max(1, χ²_red) + (dz / 2)²)``: Δχ² = 1, widened when the model fits
   worse than the noise, plus half the model's own thickness step ``dz`` (a multislice
   model knows the thickness only in whole slices).

The alignment is re-fitted against the best entry until the best entry stays the same
(at most ``rounds``). A best entry at the library's first or last thickness is reported
(``at_edge``): the agent then asks for a library beyond it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bluestem.loop.agent import Agent

__all__ = ["Alignment", "PacbedFit", "PacbedThicknessAgent", "align", "fit_pacbed", "warp"]

#: Coarse search of the alignment: rotations (deg) and ln(scale).
ROTATIONS_DEG = np.arange(-180.0, 180.0, 5.0)
LOG_SCALES = np.linspace(-0.3, 0.3, 13)
#: Neighbours on each side of the best entry in the parabola.
WINDOW = 3


@dataclass(frozen=True)
class Alignment:
    """Measured pixel ``p`` -> library pixel ``c_lib + scale R(rotation) (p - centre)``.

    Attributes
    ----------
    centre : tuple of float
        (row, column) of the measured pattern's centre, in measured pixels.
    scale : float
        Library pixels per measured pixel (> 0).
    rotation : float
        rad, from the column axis towards the row axis.
    """

    centre: tuple[float, float]
    scale: float = 1.0
    rotation: float = 0.0

    def to_json(self) -> dict:
        """Plain values (the rotation also in degrees)."""
        return {"centre": [float(c) for c in self.centre], "scale": float(self.scale),
                "rotation": float(self.rotation),
                "rotation_deg": math.degrees(self.rotation),
                "maps": "measured pixel p -> library pixel c_lib + scale R(rotation) "
                        "(p - centre), c_lib = (fy // 2, fx // 2)"}  # fmt: skip


def _check_image(name: str, value, ndim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != ndim or min(arr.shape[-2:], default=0) < 8 or not np.isfinite(arr).all():
        raise ValueError(f"{name}: allowed a finite {ndim}-d array with frames of at least "
                         f"8 x 8 pixels, got shape {np.shape(value)}")  # fmt: skip
    if (arr < 0).any() or not arr.sum() > 0:
        raise ValueError(f"{name}: allowed non-negative intensities with a positive total")
    return arr


def warp(patterns, alignment: Alignment, shape: tuple[int, int]) -> np.ndarray:
    """Library ``patterns`` ((fy, fx) or (n, fy, fx)) seen on the measured detector of
    ``shape`` (bilinear; zero outside the library's frame)."""
    lib = np.asarray(patterns, np.float64)
    fy, fx = lib.shape[-2:]
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dy, dx = rows - alignment.centre[0], cols - alignment.centre[1]
    c, s = math.cos(alignment.rotation), math.sin(alignment.rotation)
    y = fy // 2 + alignment.scale * (s * dx + c * dy)
    x = fx // 2 + alignment.scale * (c * dx - s * dy)
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    wy, wx = y - y0, x - x0
    out = np.zeros(lib.shape[:-2] + tuple(shape))
    for oy, ox, w in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                      (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):  # fmt: skip
        yy, xx = y0 + oy, x0 + ox
        inside = (yy >= 0) & (yy < fy) & (xx >= 0) & (xx < fx)
        out += np.where(inside, lib[..., np.clip(yy, 0, fy - 1), np.clip(xx, 0, fx - 1)], 0) * w
    return out


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of ``a`` (fy, fx) with each of ``b`` (..., fy, fx)."""
    a = a - a.mean()
    b = b - b.mean(axis=(-2, -1), keepdims=True)
    den = np.sqrt((a * a).sum() * (b * b).sum(axis=(-2, -1)))
    return np.where(den > 0, (a * b).sum(axis=(-2, -1)) / np.where(den > 0, den, 1), 0.0)


def _centroid(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(image.shape)
    total = image.sum()
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def _nelder_mead(f, x0, steps, *, iterations: int = 400, tol: float = 1e-9):
    """Minimise ``f`` from ``x0`` (Nelder & Mead 1965; standard coefficients)."""
    pts = [np.asarray(x0, float)] + [np.asarray(x0, float) + np.eye(len(x0))[i] * steps[i]
                                     for i in range(len(x0))]  # fmt: skip
    vals = [f(p) for p in pts]
    for _ in range(iterations):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if vals[-1] - vals[0] < tol:
            break
        mid = np.mean(pts[:-1], axis=0)
        xr = mid + (mid - pts[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = mid + 2 * (mid - pts[-1])
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = mid + 0.5 * ((xr if fr < vals[-1] else pts[-1]) - mid)
            fc = f(xc)
            if fc < min(fr, vals[-1]):
                pts[-1], vals[-1] = xc, fc
            else:
                pts = [pts[0] + 0.5 * (p - pts[0]) for p in pts]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
    best = int(np.argmin(vals))
    return pts[best], vals[best]


def align(measured, reference, *, start: Alignment | None = None) -> tuple[Alignment, float]:
    """The :class:`Alignment` of ``reference`` (a library pattern) onto ``measured``
    maximising their NCC; returns it and the NCC. ``start`` skips the coarse search."""
    m = _check_image("measured", measured, 2)
    ref = _check_image("reference", reference, 2)
    shape = m.shape

    def score(p) -> float:
        a = Alignment((p[0], p[1]), math.exp(p[2]), p[3])
        return -float(_ncc(m, warp(ref, a, shape)))

    if start is None:
        cy, cx = _centroid(m)
        ry, rx = _centroid(ref)  # the library's own offset of its centroid from c_lib
        cy, cx = cy - (ry - ref.shape[0] // 2), cx - (rx - ref.shape[1] // 2)
        grid = [(cy, cx, ls, math.radians(r)) for r in ROTATIONS_DEG for ls in LOG_SCALES]
        scores = np.array([score(p) for p in grid])
        # equal scores (a symmetric pattern): the smallest rotation, then scale change
        close = np.flatnonzero(scores <= scores.min() + 1e-4 * abs(scores.min()))
        x0 = min((grid[i] for i in close), key=lambda p: (round(abs(p[3]), 6), abs(p[2])))
    else:
        x0 = (*start.centre, math.log(start.scale), start.rotation)
    best, value = _nelder_mead(score, x0, steps=(1.0, 1.0, 0.03, math.radians(2.0)))
    return Alignment((float(best[0]), float(best[1])), math.exp(best[2]), float(best[3])), -value


def _parabola(t: np.ndarray, chi: np.ndarray, best: int) -> tuple[float, float]:
    """Vertex and curvature (d²χ²/dt²) of a parabola through χ² around ``best``."""
    lo, hi = max(0, best - WINDOW), min(len(t), best + WINDOW + 1)
    if hi - lo < 3:
        return float(t[best]), 0.0
    tt, cc = t[lo:hi], chi[lo:hi]
    a, b, _ = np.polyfit(tt - t[best], cc, 2)
    if a <= 0:
        return float(t[best]), 0.0
    vertex = float(np.clip(t[best] - b / (2 * a), tt[0], tt[-1]))
    return vertex, 2.0 * float(a)


@dataclass(frozen=True)
class PacbedFit:
    """What :func:`fit_pacbed` found (see the module's docstring for the method)."""

    thickness: float
    uncertainty: float
    best_index: int
    at_edge: bool
    thicknesses: np.ndarray
    chi2: np.ndarray
    reduced_chi2: np.ndarray
    ncc: np.ndarray
    alignment: Alignment
    rounds: int
    dof: int

    def to_json(self) -> dict:
        """Plain values for the record (m; goodness per library entry)."""
        i = self.best_index
        return {
            "thickness": self.thickness, "uncertainty": self.uncertainty,
            "best_index": i, "best_library_thickness": float(self.thicknesses[i]),
            "at_edge": self.at_edge, "goodness": "reduced Pearson chi2",
            "reduced_chi2_min": float(self.reduced_chi2[i]), "ncc_best": float(self.ncc[i]),
            "library_thicknesses": self.thicknesses.tolist(),
            "reduced_chi2": [round(float(v), 6) for v in self.reduced_chi2],
            "ncc": [round(float(v), 8) for v in self.ncc],
            "alignment": self.alignment.to_json(), "rounds": self.rounds, "dof": self.dof,
        }  # fmt: skip


def fit_pacbed(measured, patterns, thicknesses, *, slice_thickness: float = 0.0,
               rounds: int = 3) -> PacbedFit:  # fmt: skip
    """Fit the thickness of a measured PACBED ``measured`` (fy, fx counts) to library
    ``patterns`` (n, ly, lx) of ``thicknesses`` (n, m, ascending).

    Parameters
    ----------
    slice_thickness : float
        The model's thickness step in m (added to the uncertainty as ``dz / 2``).
    rounds : int
        Most alignments (1..10).

    Raises
    ------
    ValueError
        A bad pattern, library or thickness list (naming it and what is allowed).
    """
    m = _check_image("measured", measured, 2)
    lib = _check_image("patterns", patterns, 3)
    t = np.asarray(thicknesses, np.float64).ravel()
    if t.shape != (len(lib),) or len(t) < 3 or not (np.isfinite(t).all() and (t > 0).all()
                                                    and (np.diff(t) > 0).all()):  # fmt: skip
        raise ValueError(
            f"thicknesses: allowed {len(lib)} ascending positive lengths in m "
            f"(one per pattern, at least 3), got {np.shape(thicknesses)}"
        )
    if not (isinstance(rounds, int) and 1 <= rounds <= 10):
        raise ValueError(f"rounds={rounds!r}: allowed an integer 1..10")
    if not (math.isfinite(slice_thickness) and slice_thickness >= 0):
        raise ValueError(f"slice_thickness={slice_thickness!r}: allowed a length >= 0 m")
    reference, alignment, best, done = lib.mean(axis=0), None, -1, 0
    while done < rounds:
        done += 1
        alignment, _ = align(m, reference, start=alignment)
        models = warp(lib, alignment, m.shape)
        amp = m.sum() / np.maximum(models.sum(axis=(1, 2)), 1e-300)
        expected = amp[:, None, None] * models
        chi = (((m - expected) ** 2) / (expected + 1.0)).sum(axis=(1, 2))
        new = int(np.argmin(chi))
        if new == best:
            break
        best, reference = new, lib[new]
    signal = int(((m > 0) | (models.max(axis=0) > 0)).sum())
    dof = max(1, signal - 6)
    reduced = chi / dof
    thickness, curvature = _parabola(t, chi, best)
    stat = 2.0 / curvature * max(1.0, float(reduced[best])) if curvature > 0 else 0.0
    spacing = float(np.diff(t).min())
    grid = (slice_thickness / 2) ** 2 + (spacing**2 / 12.0 if curvature <= 0 else 0.0)
    return PacbedFit(
        thickness=thickness, uncertainty=math.sqrt(stat + grid), best_index=best,
        at_edge=best in (0, len(t) - 1), thicknesses=t, chi2=chi, reduced_chi2=reduced,
        ncc=_ncc(m, models), alignment=alignment, rounds=done, dof=dof,
    )  # fmt: skip


class PacbedThicknessAgent(Agent):
    """Converges after one PACBED fit, or extends the library past its edge.

    The agent changes no setting (``suggest`` is always ``[{}]``, measure here); it owns
    the library's thickness list (:meth:`library_thicknesses`, which the plan's
    ``acquire`` asks before each fit). A fit whose best entry is at the library's first
    or last thickness moves the list beyond that edge by its span less ``WINDOW`` steps
    (the old best keeps its neighbours; never below one step), and the loop measures
    again; otherwise, or once the list cannot move, it has converged.

    Parameters
    ----------
    thicknesses : sequence of float
        The first library's thicknesses in m (ascending).
    """

    def __init__(self, thicknesses: Sequence[float]):
        t = [float(v) for v in thicknesses]
        if len(t) < 3 or not all(b > a > 0 for a, b in itertools.pairwise(t)):
            raise ValueError(f"thicknesses={thicknesses!r}: allowed at least 3 ascending "
                             "positive lengths in m")  # fmt: skip
        self._first = t
        self._current = list(t)
        self._fits: list[dict] = []
        self._decision = "measure"

    def parameters(self) -> dict:
        return {"thicknesses": self._first}

    def library_thicknesses(self) -> list[float]:
        """The thicknesses (m) of the library the next measurement is fitted against."""
        return list(self._current)

    def suggest(self, n: int = 1) -> list[dict[str, Any]]:
        return [{} for _ in range(max(1, n))]

    def ingest(self, point: Mapping[str, Any], measurement: Mapping[str, Any]) -> None:
        fit = dict(measurement["fit"])
        self._fits.append(fit)
        t = np.asarray(fit["library_thicknesses"], float)
        span, step = float(t[-1] - t[0]), float(np.diff(t).min())
        if not fit["at_edge"]:
            self._decision = "converged: the best library entry is inside the library"
        elif fit["best_index"] == len(t) - 1:
            self._current = (t + span - WINDOW * step).tolist()
            self._decision = "refine: best at the thickest entry; library moved up"
        elif t[0] > 1.5 * step:
            shift = min(span - WINDOW * step, float(t[0]) - step)
            self._current = (t - shift).tolist()
            self._decision = "refine: best at the thinnest entry; library moved down"
        else:
            self._decision = "converged: best at the thinnest entry, which cannot move"

    def report(self) -> dict:
        if not self._fits:
            return {"converged": False, "decision": self._decision}
        fit = self._fits[-1]
        return {
            "converged": self._decision.startswith("converged"),
            "decision": self._decision,
            "thickness": fit["thickness"],
            "uncertainty": fit["uncertainty"],
            "reduced_chi2": fit["reduced_chi2_min"],
            "at_edge": fit["at_edge"],
            "next_library": [self._current[0], self._current[-1], len(self._current)],
            "measurements": len(self._fits),
        }
