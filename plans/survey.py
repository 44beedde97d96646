"""Adaptive survey: a coarse survey, features found in its image, fine 4D scans centred on
the best of them by scan offset, the drift tracked in between (docs/loop.md, "Adaptive
survey").

A closed loop (:func:`closed_loop`) over ``SCAN:OffsetY``/``OffsetX`` whose agent is
:class:`bluestem.loop.survey.SurveyAgent`. Iteration 0 is the survey: a raster over a large
field at low dose; its virtual image (ADF by default, the live reduction's default spec
for the run's instrument state, recomputed from the raw file) gives the features
(:func:`bluestem.loop.features.find_features`). Then, per feature, a tracking raster of the
survey's field at fewer positions, registered against the survey image binned to the same
positions (:func:`bluestem.loop.drift.measure_shift`), and a fine raster centred on the
feature plus the drift extrapolated to its start. Each fine scan's own image measures how
well it is centred (its nearest feature's distance from the centre).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bluesky.utils import MsgGenerator

from bluestem.loop import LoopResult
from bluestem.loop.survey import FINE, OFFSET_X, OFFSET_Y, SURVEY, TRACK, SurveyAgent

from .loop import closed_loop, raw_file, run_documents
from .raster import raster
from .validation import check_device, check_dwell, check_number, check_shape

__all__ = ["adaptive_survey", "scan_image"]

#: Virtual images a survey may look for features in (BF: features are dark, negated).
CONTRASTS = ("adf", "bf")
#: Most fine scans one survey may take.
MAX_FEATURES = 50
#: Tracking images are the survey binned by this factor (allowed).
BINNINGS = (1, 2, 4, 8)
#: Smoothing of a feature image (nm): above the spacing of atomic columns (0.2-0.3 nm),
#: below the size of a nanoparticle, so a particle is one blob at any step.
SMOOTH_NM = 0.5
#: Smoothing of a fine image (nm): atomic columns gone, touching particles still two.
FINE_SMOOTH_NM = 1.0
#: A fine image's background: this percentile of it (the particle may fill half the field).
FLOOR_PERCENTILE = 5.0
#: Below this normalised cross-correlation a drift measurement is not trusted.
MIN_PEAK = 0.3


def scan_image(path: str, start: Mapping, name: str):
    """The virtual image ``name`` of the raster in ``path`` (its start document
    ``start``): the live reduction's default spec for the run's instrument state
    (:func:`bluestem.reduce.resolve_reductions`), computed from the raw frames; NaN where
    a frame was not received."""
    from bluestem.frames import FrameReader
    from bluestem.reduce import Reducer, resolve_reductions
    from bluestem.reduce.blocks import add_received

    spec = resolve_reductions(None, start)
    with FrameReader(path) as reader:
        shape = tuple(reader.scan_shape[-2:])
        reducer = Reducer(spec, shape)
        add_received(reducer, reader.read(0, reader.total), reader.received(0, reader.total), 0)
    return reducer.images()[name]


def _geometry(start: Mapping) -> tuple[tuple[float, float], float]:
    cal = start.get("calibration") or {}
    if "scan_step_nm" not in cal:
        raise ValueError("the raster's start document has no scan_step_nm calibration")
    step = tuple(float(s) for s in cal["scan_step_nm"])
    return (step[0], step[1]), math.radians(float(cal.get("scan_rotation_deg", 0.0)))


def _check_counts(features, track, survey, fine, track_shape, budget) -> int:
    frames = survey[0] * survey[1]
    visit = fine[0] * fine[1] + (track_shape[0] * track_shape[1] if track else 0)
    fit = (budget - frames) // visit if budget >= frames else 0
    if fit < 1:
        raise ValueError(f"frame_budget={budget!r}: the survey takes {frames} frames and each "
                         f"feature {visit}; allowed >= {frames + visit}")  # fmt: skip
    return min(features, fit)


def adaptive_survey(
    det,
    scan,
    mic,
    *,
    survey_shape: Sequence[int] = (48, 48),
    survey_fov: float = 36.0,
    survey_dwell: float = 5e-5,
    fine_shape: Sequence[int] = (32, 32),
    fine_fov: float = 8.0,
    fine_dwell: float = 2e-4,
    features: int = 3,
    frame_budget: int = 20_000,
    track: bool = True,
    track_binning: int = 2,
    track_dwell: float | None = None,
    contrast: str = "adf",
    recentre: float | None = 0.05,
    md: dict | None = None,
) -> MsgGenerator[LoopResult]:
    """Survey a large field, then take fine 4D scans centred on its best features.

    Parameters
    ----------
    det, scan, mic : PixelatedDetector, ScanGenerator, Microscope
        The scan must have ``offset_y`` and ``offset_x`` (``SCAN:OffsetY/X``).
    survey_shape, survey_fov, survey_dwell : (ny, nx), nm, s
        The survey: positions (8..1024 each), square field (1..10000 nm), dwell.
    fine_shape, fine_fov, fine_dwell : (ny, nx), nm, s
        Each fine scan (positions 4..1024 each, 0.1 nm..``survey_fov``).
    features : int
        Fine scans wanted, 1..50 (the heaviest features first; fewer when the survey
        finds fewer or the budget allows fewer).
    frame_budget : int
        Frames the whole survey may take: the survey, then per feature the tracking
        and the fine scan; must allow at least one feature.
    track : bool
        Track the drift before each fine scan and correct the offset for it.
    track_binning : int
        The tracking raster has ``survey_shape / track_binning`` positions over the same
        field (1, 2, 4 or 8, dividing ``survey_shape``).
    track_dwell : float, optional
        s per tracking position (default: ``survey_dwell``).
    contrast : str
        ``"adf"`` (bright features: particles) or ``"bf"`` (dark features).
    recentre : float, optional
        A fine scan whose own image shows its feature further than ``recentre ×
        fine_fov`` from its centre is taken once more, centred on the feature (0 <
        recentre < 0.5; None: never). Re-centred scans come out of the frame budget
        left after the features' visits.
    md : dict, optional
        Extra metadata of the umbrella and every raster run.

    Returns
    -------
    LoopResult
        ``report["visited"]`` fine scans; ``decisions`` the offsets set.

    Raises
    ------
    ValueError
        A bad argument, before any message.
    """
    check_device("det", det, ("hdf", "cam"))
    check_device("scan", scan, ("geometry", "offset_y", "offset_x"))
    check_device("mic", mic, ("defocus",))
    survey_shape = check_shape(survey_shape, "survey_shape")
    fine_shape = check_shape(fine_shape, "fine_shape")
    for name, shape, low in (("survey_shape", survey_shape, 8), ("fine_shape", fine_shape, 4)):
        if not all(low <= n <= 1024 for n in shape):
            raise ValueError(f"{name}={shape!r}: allowed two integers, each {low}..1024")
    survey_fov = check_number("survey_fov", survey_fov, low=1.0, high=1e4)
    fine_fov = check_number("fine_fov", fine_fov, low=0.1, high=survey_fov)
    survey_dwell, fine_dwell = check_dwell(survey_dwell, "survey_dwell"), check_dwell(
        fine_dwell, "fine_dwell")  # fmt: skip
    track_dwell = survey_dwell if track_dwell is None else check_dwell(track_dwell, "track_dwell")
    if isinstance(features, bool) or not isinstance(features, int) \
            or not 1 <= features <= MAX_FEATURES:  # fmt: skip
        raise ValueError(f"features={features!r}: allowed an integer 1..{MAX_FEATURES}")
    if not isinstance(track, bool):
        raise ValueError(f"track={track!r}: allowed True or False")
    if track_binning not in BINNINGS or isinstance(track_binning, bool) or any(
            n % track_binning for n in survey_shape):  # fmt: skip
        raise ValueError(f"track_binning={track_binning!r}: allowed one of {BINNINGS} "
                         f"dividing survey_shape {survey_shape}")  # fmt: skip
    if recentre is not None:
        recentre = check_number("recentre", recentre, low=0.0, high=0.5, low_open=True)
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast={contrast!r}: allowed one of {CONTRASTS}")
    if isinstance(frame_budget, bool) or not isinstance(frame_budget, int):
        raise ValueError(f"frame_budget={frame_budget!r}: allowed an integer")
    if md is not None and not isinstance(md, Mapping):
        raise ValueError(f"md={md!r}: allowed a mapping or None")
    track_shape = (survey_shape[0] // track_binning, survey_shape[1] // track_binning)
    wanted = _check_counts(features, track, survey_shape, fine_shape, track_shape, frame_budget)
    fine_frames = fine_shape[0] * fine_shape[1]
    visits = wanted * (fine_frames + (track_shape[0] * track_shape[1] if track else 0))
    spare = frame_budget - survey_shape[0] * survey_shape[1] - visits
    recentres = 0 if recentre is None else min(wanted, spare // fine_frames)
    extra = dict(md or {})
    parameters = {
        "survey": {"shape": list(survey_shape), "fov_nm": survey_fov, "dwell": survey_dwell},
        "fine": {"shape": list(fine_shape), "fov_nm": fine_fov, "dwell": fine_dwell},
        "track": {"on": track, "shape": list(track_shape), "dwell": track_dwell,
                  "binning": track_binning},
        "features": features, "features_in_budget": wanted, "frame_budget": frame_budget,
        "contrast": contrast, "recentre": recentre, "recentres_in_budget": recentres,
    }  # fmt: skip
    agent = SurveyAgent(
        features=wanted,
        track=track,
        recentres=recentres,
        recentre_nm=None if recentre is None else recentre * fine_fov,
    )
    reference: dict[str, Any] = {}
    scans = {
        SURVEY: (survey_shape, survey_fov, survey_dwell),
        TRACK: (track_shape, survey_fov, track_dwell),
        FINE: (fine_shape, fine_fov, fine_dwell),
    }

    def image_of(docs):
        start = docs[0][1]
        img = scan_image(raw_file(docs), start, contrast)
        return (-img if contrast == "bf" else img), start

    def acquire(readback, iteration, loop_md):
        role = agent.phase
        again = role == FINE and agent.again is not None  # a fine scan re-centred
        shape, fov, dwell = scans[role]
        run_md = {
            **extra,
            **loop_md,
            "adaptive_survey": {**parameters, "iteration": iteration, "role": role,
                                "recentred": again},
        }  # fmt: skip
        plan = raster(det, scan, shape=shape, dwell=dwell, fov=fov, microscope=mic,
                      md=run_md)  # fmt: skip
        uid, runs = yield from run_documents(plan)
        img, start = image_of(runs[uid])
        measured = _analyse(role, img, start, reference, agent, track_binning)
        return uid, {
            "role": role,
            "method": f"{role}: {measured.pop('method')}",
            "time": float(start["time"]),
            "ready": time.time(),
            **({"recentred": True} if again else {}),
            **measured,
        }

    return (yield from closed_loop(
        agent, acquire, settings={OFFSET_Y: scan.offset_y, OFFSET_X: scan.offset_x},
        max_iterations=1 + wanted * (2 if track else 1) + recentres,
        converged=lambda r: bool(r["done"]),
        goal={"adaptive_survey": "fine scans centred on the best features", **parameters},
        md={**extra, "adaptive_survey": parameters}))  # fmt: skip


def _analyse(role, img, start, reference, agent, binning) -> dict[str, Any]:
    """The measurement of one raster's image (``reference`` keeps the survey's)."""
    import numpy as np

    from bluestem.loop.drift import bin_image, measure_shift, shift_to_scan
    from bluestem.loop.features import find_features, pixel_to_scan, smooth

    step, rotation = _geometry(start)
    shape = img.shape
    sigma = min(10.0, max(1.0, SMOOTH_NM / min(step)))
    if role == SURVEY:
        reference["image"] = np.where(np.isfinite(img), img, np.nanmedian(img))
        found = find_features(img, sigma=sigma)
        listed = []
        for f in found[:MAX_FEATURES]:
            y, x = pixel_to_scan(f.y, f.x, shape, step, rotation)
            listed.append({"y_nm": y, "x_nm": x, "radius_nm": f.radius * step[0],
                           **f.to_dict()})  # fmt: skip
        return {
            "method": "features of the survey image (find_features)",
            "values": {"features": len(listed)},
            "units": {"features": ""},
            "features": listed,
            "image_shape": list(shape),
            "step_nm": list(step),
        }
    if role == TRACK:
        ref = bin_image(reference["image"], binning)
        (dy, dx), peak = measure_shift(ref, np.where(np.isfinite(img), img, np.nanmedian(img)))
        drift = shift_to_scan(dy, dx, step, rotation)
        return {"method": "drift: cross-correlation with the survey image, binned",
                "values": {"drift_y": drift[0] * 1e-9, "drift_x": drift[1] * 1e-9},
                "units": {"drift_y": "m", "drift_x": "m"},
                "drift_nm": list(drift), "shift_px": [dy, dx], "peak": peak,
                "reliable": bool(peak >= MIN_PEAK)}  # fmt: skip
    # A fine scan resolves a particle's atomic columns (maxima of a finer smoothing) and
    # is mostly filled by it (its median lies inside the particle): smooth over
    # FINE_SMOOTH_NM, split touching particles, measure above the field's darkest part.
    filled = np.where(np.isfinite(img), img, np.nanmedian(img))
    sigma = min(10.0, max(1.0, FINE_SMOOTH_NM / min(step)))
    floor = float(np.percentile(smooth(filled, sigma), FLOOR_PERCENTILE))
    found = find_features(filled, sigma=sigma, edge=0, split=True, background=floor)
    target = agent.target or {}
    best = None
    for f in found:
        y, x = pixel_to_scan(f.y, f.x, shape, step, rotation)
        if best is None or math.hypot(y, x) < math.hypot(*best[:2]):
            best = (y, x, f)
    out: dict[str, Any] = {"method": "centring: the fine image's feature nearest its centre",
                           "target": target, "found": best is not None}  # fmt: skip
    if best is not None:
        error = math.hypot(*best[:2])
        out.update(centring_nm=[best[0], best[1]], centring_error_nm=error,
                   values={"centring_error": error * 1e-9},
                   units={"centring_error": "m"})  # fmt: skip
    return out
