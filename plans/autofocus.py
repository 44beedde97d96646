"""Autofocus: a closed loop that nulls the residual C1 and A1 of the probe (docs/loop.md,
"Autofocus").

Each iteration takes one 4D raster at a defocus offset (``c1_offset`` added to
``MIC:Defocus`` for the acquisition only), reads the frames from the run's raw file, fits
C1 and A1 (the offset subtracted) and corrects ``MIC:Defocus`` by ``-C1`` and the two-fold
astigmatism by ``-A1`` (complex: ``A1 e^{2i phi}``) with verified moves. Two measurements:
``method="parallax"`` (amorphous areas) fits the parallax of the bright-field pixel images
(:func:`bluestem.loop.parallax.fit_parallax`; it vanishes at focus, hence a default offset
of −300 nm); ``method="overlap"`` (crystals on a zone axis) fits the phase of the
double-disc overlaps (:func:`bluestem.loop.overlap.fit_overlap`; no blind zone, no offset
by default). It is on the record as one umbrella run with one raster run per iteration
(:func:`closed_loop`).
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.utils import MsgGenerator

from bluestem.loop import Agent, LoopResult

from .loop import closed_loop, raw_file, run_documents
from .raster import raster
from .validation import check_device, check_dwell, check_number, check_shape

__all__ = ["ParallaxFocusAgent", "a1_correction", "autofocus", "electron_wavelength"]

#: Loop setting names (the umbrella's columns).
DEFOCUS, ASTIGMATISM, ANGLE = "mic_defocus", "mic_astigmatism", "mic_astigmatism_angle"
#: The most iterations an autofocus may take.
MAX_ITERATIONS = 5
#: Scan positions per axis allowed (enough BF-image area to register; small enough to be
#: quick).
SHAPE_RANGE = (16, 512)
#: ``|c1_offset|`` allowed, m: outside the parallax's blind zone near focus (≈ 30 nm at
#: 200 kV, 10 mrad) even with a ±200 nm residual, and not so far that the BF images blur.
OFFSET_RANGE = (50e-9, 2e-6)
#: Convergence tolerance allowed, m.
TOLERANCE_RANGE = (0.1e-9, 100e-9)
#: The measurements, and the default defocus offset of each (m): the parallax needs one
#: outside its blind zone, the overlap phase is best measured at the setpoint.
METHODS = {"parallax": -300e-9, "overlap": 0.0}
#: Lattice plane spacing (nm) allowed for ``method="overlap"``.
LATTICE_RANGE = (0.05, 5.0)

#: Microscope read-backs of each acquisition kept in its measurement.
ACQUIRED_AT = ("defocus", "astigmatism", "astigmatism_angle", "cs", "high_tension")

_E, _M0, _C, _H = 1.602176634e-19, 9.1093837015e-31, 299792458.0, 6.62607015e-34


def electron_wavelength(high_tension: float) -> float:
    """Relativistic electron wavelength (m) at ``high_tension`` V (the textbook formula,
    ``h / sqrt(2 m0 e U (1 + e U / 2 m0 c²))``)."""
    eu = _E * float(high_tension)
    return _H / math.sqrt(2 * _M0 * eu * (1 + eu / (2 * _M0 * _C * _C)))


def a1_correction(
    astigmatism: float, angle_deg: float, fitted: float, fitted_angle: float
) -> tuple[float, float]:
    """New A1 setpoint ``(magnitude, angle in deg)`` that cancels a fitted two-fold
    astigmatism: ``A_new e^{2i φ_new} = A_set e^{2i φ_set} − A_fit e^{2i φ_fit}``.

    ``astigmatism`` and ``fitted`` in one unit (the result's); ``angle_deg`` in deg (the
    PV), ``fitted_angle`` in rad (the fit). The angle is in [−90, 90) deg (two-fold: modulo
    180°); a zero magnitude gives angle 0.
    """
    z = astigmatism * cmath.exp(2j * math.radians(angle_deg))
    z -= fitted * cmath.exp(2j * fitted_angle)
    magnitude = abs(z)
    if magnitude == 0.0:
        return 0.0, 0.0
    angle = math.degrees(cmath.phase(z) / 2)  # (-90, 90]
    return magnitude, -90.0 if angle >= 90.0 else angle


class ParallaxFocusAgent(Agent):
    """Measure, then correct: ``C1 -> C1 − C1_fit``, ``A1 -> A1 − A1_fit`` (complex).

    A fit that is not ``reliable`` changes nothing (the next iteration measures again).
    ``report()["within_tolerance"]``: the last fit is reliable and ``|C1| + σ_C1`` and
    ``|A1| + σ_A1`` are at most ``tolerance`` (within it by one sigma).

    Settings (nm, deg as the PVs): ``mic_defocus``, ``mic_astigmatism``,
    ``mic_astigmatism_angle``; measurement values in m and rad.
    """

    def __init__(self, tolerance: float = 2e-9):
        self.tolerance = float(tolerance)
        self.point: dict[str, float] | None = None
        self.fit: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []

    def parameters(self) -> dict:
        return {"tolerance": self.tolerance}

    def _next(self) -> dict[str, float]:
        if self.point is None or self.fit is None or not self.fit["reliable"]:
            return {}
        values = self.fit["values"]
        defocus = self.point[DEFOCUS] - values["c1"] * 1e9
        magnitude, angle = a1_correction(self.point[ASTIGMATISM], self.point[ANGLE],
                                         values["a1"] * 1e9, values["a1_angle"])  # fmt: skip
        return {DEFOCUS: round(defocus, 1), ASTIGMATISM: round(magnitude, 1),
                ANGLE: round(angle, 1)}  # fmt: skip

    def suggest(self, n: int = 1) -> list[dict[str, float]]:
        return [self._next() for _ in range(max(1, n))]

    def ingest(self, point: Mapping[str, Any], measurement: Mapping[str, Any]) -> None:
        self.point = {k: float(point[k]) for k in (DEFOCUS, ASTIGMATISM, ANGLE)}
        self.fit = {"values": dict(measurement["values"]),
                    "uncertainties": dict(measurement["uncertainties"]),
                    "reliable": bool(measurement["reliable"])}  # fmt: skip
        self.history.append(self.fit)

    def report(self) -> dict:
        if self.fit is None:
            return {"within_tolerance": False, "decision": "nothing measured yet"}
        v, s, tol = self.fit["values"], self.fit["uncertainties"], self.tolerance
        within = bool(self.fit["reliable"] and abs(v["c1"]) + s["c1"] <= tol
                      and abs(v["a1"]) + s["a1"] <= tol)  # fmt: skip
        nxt = self._next()
        decision = ("within tolerance" if within else
                    "fit not reliable: measure again" if not nxt else
                    "correct C1 and A1")  # fmt: skip
        return {
            "c1_nm": v["c1"] * 1e9, "sigma_c1_nm": s["c1"] * 1e9,
            "a1_nm": v["a1"] * 1e9, "sigma_a1_nm": s["a1"] * 1e9,
            "a1_angle_deg": math.degrees(v["a1_angle"]),
            "reliable": self.fit["reliable"], "tolerance_nm": tol * 1e9,
            "within_tolerance": within, "next": nxt, "decision": decision,
        }  # fmt: skip


def _within(report: Mapping) -> bool:
    return bool(report.get("within_tolerance"))


def _measure(
    path: str, start: Mapping, nominal: float, method: str = "parallax",
    lattice: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fit the raster in ``path`` (its start document ``start``) by ``method``; ``nominal``
    defocus nm; ``lattice`` the plane spacing (nm) of the overlap fit's reflections."""
    import numpy as np

    from bluestem.frames import FrameReader

    mic, cal = start.get("microscope") or {}, start.get("calibration") or {}
    if "angle_per_pixel_mrad" not in cal or "high_tension" not in mic:
        raise ValueError(
            "the raster's start document has no angle_per_pixel_mrad calibration or high "
            "tension: autofocus needs the microscope"
        )
    with FrameReader(path) as reader:
        frames = reader.read(0, reader.total)
        ny, nx = reader.scan_shape[-2:]
        if not np.all(reader.received(0, reader.total)):
            raise ValueError(f"{path}: frames missing; the fit needs a whole scan")
    data = frames.reshape(ny, nx, *frames.shape[-2:])
    offset = (float(mic["defocus"]) - nominal) * 1e-9  # as read back
    step = tuple(float(s) * 1e-9 for s in cal["scan_step_nm"])
    args = {
        "step": step,
        "angle_per_pixel": float(cal["angle_per_pixel_mrad"]) * 1e-3,
        "rotation": math.radians(float(cal.get("scan_rotation_deg", 0.0))),
        "wavelength": electron_wavelength(float(mic["high_tension"]) * 1e3),
        "c1_offset": offset,
        "c3": float(mic.get("cs", 0.0)) * 1e-3,
    }
    if method == "overlap":
        from bluestem.loop.overlap import fit_overlap

        args["lattice"] = None if lattice is None else lattice * 1e-9
        fit = fit_overlap(data, **args)
        name = "double-disc overlap phase (WDD/SSB) fit of C1, A1"
    else:
        from bluestem.loop.parallax import fit_parallax

        fit = fit_parallax(data, **args)
        name = "BF parallax (tcBF) fit of C1, A1"
    summary = fit.summary()
    extra = {}
    if method != "overlap":  # the bins' shifts: what the loop view draws as a quiver
        extra["parallax"] = {
            "theta": np.asarray(fit.theta, float).tolist(),
            "shifts": np.asarray(fit.shifts, float).tolist(),
            "model_shifts": np.asarray(fit.model_shifts, float).tolist(),
            "weights": np.asarray(fit.weights, float).tolist(),
        }
    return {
        "method": name,
        "parameters": {"file": path, "method": method, **args, "step": list(step)},
        "values": {"c1": fit.c1, "a1": fit.a1, "a1_angle": fit.a1_angle},
        "uncertainties": {"c1": fit.sigma_c1, "a1": fit.sigma_a1, "a1_angle": fit.sigma_a1_angle},
        "units": {"c1": "m", "a1": "m", "a1_angle": "rad"},
        "reliable": bool(fit.reliable),
        "residual": fit.residual,
        "explained": fit.explained,
        "fit": summary,
        "acquired_at": {k: mic.get(k) for k in ACQUIRED_AT},
        **extra,
    }


def autofocus(
    det,
    scan,
    mic,
    *,
    shape: Sequence[int] = (48, 48),
    fov: float = 24.0,
    dwell: float = 2e-4,
    c1_offset: float | None = None,
    max_iterations: int = MAX_ITERATIONS,
    tolerance: float = 2e-9,
    method: str = "parallax",
    lattice: float | None = None,
    md: dict | None = None,
) -> MsgGenerator[LoopResult]:
    """Null the residual defocus C1 and two-fold astigmatism A1 of the probe.

    A closed loop (:func:`bluestem.plans.closed_loop`) over ``MIC:Defocus``,
    ``MIC:Astigmatism`` and ``MIC:AstigmatismAngle``. Each iteration: set the correction
    of the last fit (none at first), move the defocus to setpoint + ``c1_offset``, take a
    raster, move it back, read the frames from the run's raw file and fit them by
    ``method`` (the offset as read back subtracted; the wavelength from the read-back high
    tension, angle per pixel from the run's calibration, step and rotation from the scan,
    C3 from ``MIC:Cs_RBV``). Converged when the fit is reliable and ``|C1| + σ_C1`` and
    ``|A1| + σ_A1`` are at most ``tolerance``.

    Parameters
    ----------
    det, scan, mic : PixelatedDetector, ScanGenerator, Microscope
    shape : (ny, nx)
        Scan positions, each 16..512.
    fov : float
        Square field of view, nm (0.5..10000). Parallax: about 0.5 nm per step suits 64²
        frames at 10 mrad (the BF images must resolve the specimen's texture). Overlap: a
        step of at most ``λ / (4α)`` (0.63 Å at 200 kV, 10 mrad), e.g. 32 × a/8 on SrTiO3.
    dwell : float
        s per position (0 < dwell <= 1): with the beam current, the dose.
    c1_offset : float, optional
        Defocus added during each acquisition, m. Default −300 nm for the parallax (which
        needs ``50e-9 <= |c1_offset| <= 2e-6`` and more than the largest residual
        expected; underfocus gives the smaller bias with a positive C3 in the twin), 0 for
        the overlap (``|c1_offset| <= 2e-6``: it has no blind zone).
    max_iterations : int
        1..5 acquisitions.
    tolerance : float
        m, 1e-10..1e-7.
    method : str
        ``"parallax"`` (:func:`bluestem.loop.parallax.fit_parallax`: amorphous areas) or
        ``"overlap"`` (:func:`bluestem.loop.overlap.fit_overlap`: a crystal on a zone
        axis).
    lattice : float, optional
        Overlap only: the plane spacing (nm, 0.05..5) of the reflections to use (e.g.
        0.276 for SrTiO3 {110}); None takes the strongest.
    md : dict, optional
        Extra metadata of the umbrella and every raster run.

    Returns
    -------
    LoopResult

    Raises
    ------
    ValueError
        A bad argument, before any message.
    """
    check_device("det", det, ("hdf", "cam"))
    check_device("scan", scan, ("geometry",))
    check_device("mic", mic, ("defocus", "astigmatism", "astigmatism_angle"))
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method={method!r}: allowed {' or '.join(map(repr, METHODS))}")
    if lattice is not None:
        if method != "overlap":
            raise ValueError(f"lattice={lattice!r}: allowed only with method='overlap'")
        lattice = check_number("lattice", lattice, low=LATTICE_RANGE[0], high=LATTICE_RANGE[1])
    shape = check_shape(shape)
    if not all(SHAPE_RANGE[0] <= n <= SHAPE_RANGE[1] for n in shape):
        raise ValueError(f"shape={shape!r}: allowed two integers, each "
                         f"{SHAPE_RANGE[0]}..{SHAPE_RANGE[1]}")  # fmt: skip
    fov = check_number("fov", fov, low=0.5, high=1e4)
    dwell = check_dwell(dwell)
    c1_offset = METHODS[method] if c1_offset is None else c1_offset
    offset = check_number("c1_offset", c1_offset, low=-OFFSET_RANGE[1], high=OFFSET_RANGE[1])
    if method == "parallax" and abs(offset) < OFFSET_RANGE[0]:
        raise ValueError(f"c1_offset={c1_offset!r}: allowed {OFFSET_RANGE[0]:g} <= "
                         f"|c1_offset| <= {OFFSET_RANGE[1]:g} m (outside the blind zone "
                         "near focus)")  # fmt: skip
    if (isinstance(max_iterations, bool) or not isinstance(max_iterations, int)
            or not 1 <= max_iterations <= MAX_ITERATIONS):  # fmt: skip
        raise ValueError(f"max_iterations={max_iterations!r}: allowed an integer "
                         f"1..{MAX_ITERATIONS}")  # fmt: skip
    tolerance = check_number("tolerance", tolerance, low=TOLERANCE_RANGE[0],
                             high=TOLERANCE_RANGE[1])  # fmt: skip
    if md is not None and not isinstance(md, Mapping):
        raise ValueError(f"md={md!r}: allowed a mapping or None")
    extra = dict(md or {})
    parameters = {"shape": list(shape), "fov_nm": fov, "dwell": dwell, "c1_offset": offset,
                  "tolerance": tolerance, "max_iterations": max_iterations,
                  "method": method, "lattice_nm": lattice}  # fmt: skip

    def acquire(readback, iteration, loop_md):
        nominal = float(readback[DEFOCUS])
        if offset:
            yield from bps.mv(mic.defocus, round(nominal + offset * 1e9, 1))
        run_md = {**extra, **loop_md, "autofocus": {**parameters, "iteration": iteration}}
        plan = raster(det, scan, shape=shape, dwell=dwell, fov=fov, microscope=mic,
                      reductions=False, md=run_md)  # fmt: skip
        uid, runs = yield from run_documents(plan)
        if offset:
            yield from bps.mv(mic.defocus, nominal)
        docs = runs[uid]
        return uid, _measure(raw_file(docs), docs[0][1], nominal, method, lattice)

    how = {"parallax": "BF parallax", "overlap": "double-disc overlap phase"}[method]
    return (yield from closed_loop(
        ParallaxFocusAgent(tolerance), acquire,
        settings={DEFOCUS: mic.defocus, ASTIGMATISM: mic.astigmatism,
                  ANGLE: mic.astigmatism_angle},
        max_iterations=max_iterations, converged=_within,
        goal={"autofocus": f"|C1|, |A1| <= tolerance by {how}", **parameters},
        md={**extra, "autofocus": parameters}))  # fmt: skip
