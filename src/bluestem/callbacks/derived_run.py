"""A reduction as a run of its own: the virtual images and the exact spec that made them.

The derived run is linked to its raw run by ``parent_uid``; its start document holds the
complete :class:`bluestem.reduce.ReductionSpec` (``reduction``, with user masks by value)
and the DPC rotation actually used (``dpc``), so ``bluestem reduce`` recomputes every image
bit for bit. Its ``primary`` stream has one event whose data are the images: TiledWriter
stores arrays of more than 16 elements as Tiled arrays.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "COPIED_KEYS",
    "add_dpc",
    "derived_run_documents",
    "final_images",
    "finite_neighbourhoods",
]

# Start-document keys of the raw run a derived run repeats, so searches by sample,
# operator or detector find the reductions next to the raw runs.
COPIED_KEYS = ("sample", "operator", "detectors", "proposal", "series")


def final_images(reducer, spec, *, step: tuple[float, float] = (1.0, 1.0)) -> tuple[dict, dict]:
    """The reducer's images plus the DPC images, and how DPC was done.

    Parameters
    ----------
    reducer : bluestem.reduce.Reducer
    spec : bluestem.reduce.ReductionSpec
    step : (dy, dx)
        Scan step (nm) for the divergence and the integration.

    Returns
    -------
    images : dict
        name -> float64 array.
    dpc : dict
        ``rotation_deg``, ``flip``, ``estimated`` (rotation found from the data) and
        ``step``; when estimated, also ``significance``, ``uncertainty_deg`` and
        ``problems`` (why the estimate is poorly determined, in words: see
        :class:`bluestem.reduce.RotationFit`); empty when the spec has no centre of mass.
    """
    return add_dpc(reducer.images(), spec, step=step)


def finite_neighbourhoods(com_y: np.ndarray, com_x: np.ndarray) -> int:
    """How many 2 x 2 neighbourhoods of the COM field are finite (what a curl, and so a
    rotation estimate, can be computed from)."""
    ok = np.isfinite(com_y) & np.isfinite(com_x)
    if ok.ndim != 2 or min(ok.shape) < 2:
        return 0
    return int((ok[:-1, :-1] & ok[1:, :-1] & ok[:-1, 1:] & ok[1:, 1:]).sum())


def add_dpc(
    images, spec, *, step: tuple[float, float] = (1.0, 1.0), min_neighbourhoods: int = 1
) -> tuple[dict, dict]:
    """``images`` plus ``ddpc`` and ``idpc`` from its centre of mass (see
    :func:`final_images`); positions not reduced yet count as zero deflection.

    DPC needs a 2-D COM field: until it has ``min_neighbourhoods`` finite 2 x 2
    neighbourhoods (or all it can have, if fewer), or when the rotation cannot be
    estimated from it (a constant field: vacuum), ``images`` come back without DPC and
    ``dpc`` says why (``{"skipped": reason}``).
    """
    from bluestem.reduce import ddpc, idpc, rotation_fit

    images = dict(images)
    if "com_y" not in images or not np.isfinite(images["com_y"]).any():
        return images, {}
    com_y, com_x = images["com_y"], images["com_x"]
    have = finite_neighbourhoods(com_y, com_x)
    possible = max(0, com_y.shape[0] - 1) * max(0, com_y.shape[1] - 1)
    if have == 0 or have < min(min_neighbourhoods, possible):
        return images, {"skipped": f"{have} finite 2x2 neighbourhoods of the COM field"}
    estimated = spec.rotation_deg is None or spec.flip is None
    quality = {}
    if estimated:
        try:
            fit = rotation_fit(com_y, com_x)
        except ValueError as exc:  # e.g. a constant field: nothing to calibrate from
            return images, {"skipped": str(exc)}
        rotation = spec.rotation_deg if spec.rotation_deg is not None else fit.rotation_deg
        flip = spec.flip if spec.flip is not None else fit.flip
        quality = {
            "significance": fit.significance,
            "uncertainty_deg": fit.uncertainty_deg,
            "problems": fit.problems(),
        }
    else:
        rotation, flip = spec.rotation_deg, spec.flip
    kw = {"rotation_deg": float(rotation), "flip": bool(flip), "step": tuple(step)}
    images["ddpc"] = ddpc(com_y, com_x, **kw)
    images["idpc"] = idpc(com_y, com_x, **kw)
    return images, {**kw, "step": list(step), "estimated": bool(estimated), **quality}


def _data_key(array: np.ndarray) -> dict:
    return {
        "source": "bluestem.reduce",
        "dtype": "array",
        "shape": list(array.shape),
        "dtype_numpy": array.dtype.str,
    }


def derived_run_documents(
    parent: Mapping[str, Any],
    spec,
    images: Mapping[str, np.ndarray],
    *,
    dpc: Mapping[str, Any] | None = None,
    mode: str = "live",
    metadata: Mapping[str, Any] | None = None,
    parent_stop: Mapping[str, Any] | None = None,
) -> list[tuple[str, dict]]:
    """The documents of one derived run: start, descriptor, one event, stop.

    A derived run ends as its parent did: with ``parent_stop`` (the raw run's stop
    document) its ``exit_status`` is the parent's, and a parent that did not succeed
    gives a ``reason`` naming it and repeating the parent's reason.

    Parameters
    ----------
    parent : mapping
        The raw run's start document.
    spec : bluestem.reduce.ReductionSpec
    images : mapping
        name -> array (NaN where a position was never received).
    dpc : mapping, optional
        As returned by :func:`final_images`.
    mode : {"live", "offline", "distributed"}
        How the reduction ran (recorded, never changes the result).
    metadata : mapping, optional
        Extra start-document entries (e.g. ``scheduler``).
    parent_stop : mapping, optional
        The raw run's stop document.
    """
    import event_model

    import bluestem

    names = sorted(images)
    arrays = {name: np.ascontiguousarray(images[name], dtype=np.float64) for name in names}
    scan_images = [n for n in names if arrays[n].ndim == 2 and n not in ("sum_dp", "max_dp")]
    md = {
        "plan_name": "reduce",
        "parent_uid": parent["uid"],
        "derived": True,
        "reduction": spec.to_dict(),
        "reduction_digest": spec.digest(),
        "dpc": dict(dpc or {}),
        "reduction_mode": mode,
        "scan": {"shape": list(parent.get("scan", {}).get("shape", []))},
        "images": names,
        "bluestem_version": bluestem.__version__,
        **{k: parent[k] for k in COPIED_KEYS if k in parent},
        **dict(metadata or {}),
    }
    run = event_model.compose_run(metadata=md)
    desc = run.compose_descriptor(
        name="primary",
        data_keys={name: _data_key(arrays[name]) for name in names},
        hints={"reduce": {"fields": scan_images}},
    )
    now = time.time()
    event = desc.compose_event(data=arrays, timestamps=dict.fromkeys(names, now), seq_num=1)
    status, reason = "success", ""
    if parent_stop is not None and parent_stop.get("exit_status", "success") != "success":
        status = parent_stop["exit_status"]
        why = parent_stop.get("reason") or "no reason recorded"
        reason = f"parent run {parent['uid']} ended {status!r}: {why}"
    stop = run.compose_stop(exit_status=status, reason=reason)
    return [
        ("start", run.start_doc),
        ("descriptor", desc.descriptor_doc),
        ("event", event),
        ("stop", stop),
    ]
