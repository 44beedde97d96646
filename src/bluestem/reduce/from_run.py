"""A run's reduction spec from what the plan was asked and the instrument as read back.

The 4D plans' ``reductions=`` argument is checked here (:func:`check_reductions`) and
resolved against the start document's instrument state (:func:`resolve_reductions`); the
plans record the result in the start document (``reduction``), the session's
:class:`bluestem.callbacks.LiveReduction` reduces every run that has one, and the derived
run repeats it. ``bluestem reduce`` picks its spec with :func:`run_spec`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from bluestem.reduce.detectors import VirtualDetector
from bluestem.reduce.spec import ReductionSpec

__all__ = ["check_reductions", "resolve_reductions", "run_spec"]

#: rad per mrad: the start document records angles in mrad, the spec takes rad.
MRAD = 1e-3

SHORTHAND_KEYS = ("bf", "adf", "com", "com_radius", "com_mask", "centre", "masks", "rotation",
                  "flip")  # fmt: skip


def check_reductions(reductions: Any) -> Any:
    """Refuse a malformed ``reductions`` argument before anything moves.

    Allowed: ``None`` (default: bright field, annular dark field, centre of mass),
    ``False`` (no live reduction), a ``ReductionSpec``, its ``to_dict()`` form, or a
    shorthand mapping with keys ``bf`` (radius, px), ``adf`` ((inner, outer), px),
    ``com`` (bool), ``com_radius`` (px), ``com_mask`` (bool array of the frame shape),
    ``centre`` ((cy, cx), px), ``masks`` (name -> weight array of the frame shape),
    ``rotation`` (deg) and ``flip`` (bool).
    """
    if reductions is None or reductions is False or isinstance(reductions, ReductionSpec):
        return reductions
    if not isinstance(reductions, Mapping):
        raise ValueError(
            f"reductions={reductions!r}: allowed None (BF + ADF + COM), False, a "
            f"ReductionSpec or a mapping with keys {', '.join(SHORTHAND_KEYS)}"
        )
    if "frame_shape" in reductions:  # a full spec, as recorded in a start document
        return ReductionSpec.from_dict(reductions)
    extra = [k for k in reductions if k not in SHORTHAND_KEYS]
    if extra:
        raise ValueError(
            f"reductions: unknown key {extra[0]!r}; allowed: {', '.join(SHORTHAND_KEYS)}"
        )
    return dict(reductions)


def _calibration(state: Mapping[str, Any]) -> tuple[tuple[int, int], float | None, float | None]:
    """Frame shape, rad per pixel and the probe's convergence semi-angle (rad).

    The angle per pixel is the one the run recorded, ``calibration.angle_per_pixel_mrad``:
    :func:`bluestem.instrument.angle_per_pixel` (rad) of the detector and microscope as
    read back, in mrad. It is converted back, never recomputed from the readbacks, so a
    spec resolved from a stored run is the one resolved live, bit for bit. The microscope
    reads back its convergence semi-angle in mrad.
    """
    det = state.get("detector", {})
    frame = (int(det["cam_array_size_y"]), int(det["cam_array_size_x"]))
    mrad = state.get("calibration", {}).get("angle_per_pixel_mrad")
    alpha = (state.get("microscope") or {}).get("convergence_angle")
    return frame, _rad(mrad), _rad(alpha)


def _rad(mrad: Any) -> float | None:
    """A recorded angle in mrad, in rad (None stays None)."""
    return None if mrad is None else float(mrad) * MRAD


def resolve_reductions(reductions: Any, state: Mapping[str, Any]):
    """The spec for a run, from the checked argument and the instrument as read back.

    When the probe's disc in the detector plane is known (convergence semi-angle / angle
    per pixel), the default bright field is its central half (the lattice's phase
    contrast shows best in a small BF detector) and the annular dark field starts at 1.1
    times the disc; otherwise :meth:`ReductionSpec.default` applies.

    Returns
    -------
    ReductionSpec or None
    """

    if reductions is False:
        return None
    if isinstance(reductions, ReductionSpec):
        return reductions
    frame, per_pixel, alpha = _calibration(state)
    short = dict(reductions or {})
    bf, adf = short.get("bf"), short.get("adf")
    disc = alpha / per_pixel if per_pixel and alpha else 0.0
    edge = min(frame) / 2 - 1
    if 0 < disc < edge / 1.2:
        bf = 0.5 * disc if bf is None else bf
        adf = (1.1 * disc, 0.95 * edge) if adf is None else adf
    spec = ReductionSpec.default(
        frame, centre=short.get("centre"), bf_radius=bf, adf=adf, angle_per_pixel=per_pixel
    )
    changes: dict[str, Any] = {}
    if "com" in short or "com_radius" in short or "com_mask" in short:
        changes["com"] = bool(short.get("com", True))
        changes["com_radius"] = short.get("com_radius")
        changes["com_mask"] = short.get("com_mask")
    if "rotation" in short:
        changes["rotation_deg"] = short["rotation"]
    if "flip" in short:
        changes["flip"] = short["flip"]
    masks = short.get("masks") or {}
    if not isinstance(masks, Mapping):
        raise ValueError(f"reductions['masks']={masks!r}: allowed a mapping name -> array")
    if masks:
        user = tuple(
            VirtualDetector(str(name), "user", {"weights": np.asarray(mask, np.float32)})
            for name, mask in masks.items()
        )
        changes["detectors"] = spec.detectors + user
    return dataclasses.replace(spec, **changes) if changes else spec


def run_spec(start: Mapping[str, Any], flags: Mapping[str, Any] | None = None):
    """The spec to reduce a stored run with (``bluestem reduce``).

    Without ``flags``: the spec the run recorded (a bit-for-bit recomputation), or the
    default for its instrument state when it recorded none. With ``flags`` (keys ``bf``,
    ``adf``, ``com``, ``com_radius``, ``centre``, ``masks`` as in the shorthand): exactly
    the detectors asked for, COM only when ``com`` is true.
    """

    if flags is None:
        if start.get("reduction"):
            return ReductionSpec.from_dict(start["reduction"])
        return resolve_reductions(None, start)
    check_reductions(dict(flags))
    frame, per_pixel, _ = _calibration(start)
    detectors = []
    if flags.get("bf") is not None:
        detectors.append(VirtualDetector("bf", "disk", {"radius": flags["bf"]}))
    if flags.get("adf") is not None:
        inner, outer = flags["adf"]
        detectors.append(VirtualDetector("adf", "annulus", {"inner": inner, "outer": outer}))
    for name, mask in (flags.get("masks") or {}).items():
        detectors.append(VirtualDetector(str(name), "user", {"weights": np.asarray(mask)}))
    return ReductionSpec(
        frame,
        centre=flags.get("centre"),
        detectors=tuple(detectors),
        com=bool(flags.get("com") or flags.get("com_mask") is not None),
        com_radius=flags.get("com_radius"),
        com_mask=flags.get("com_mask"),
        angle_per_pixel=per_pixel,
    )
