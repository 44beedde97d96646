"""From PV readbacks to the physics twin, and back from a file's metadata.

The twin is described by plain, JSON-able parameters (SI units) so that the very same
description goes into the frame file's metadata and a reader can rebuild the twin that
produced the file (:func:`twin_from_parameters`).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from .hidden import split_specimen

__all__ = [
    "TwinReuse",
    "build_render",
    "parse_specimen_parameters",
    "specimen_of",
    "specimen_truth",
    "twin_from_parameters",
    "twin_parameters",
]


def twin_parameters(
    *,
    optics: Mapping[str, float],
    detector: Mapping[str, Any],
    scan: Mapping[str, Any],
    specimen: str | Mapping[str, Any],
    dose_per_frame: float,
    seed: int,
    faults: str = "",
) -> dict:
    """Everything needed to rebuild the twin, as plain Python values (SI units).

    ``scan["offset"]`` (y, x) in m, the specimen coordinates of the scan centre
    (:attr:`bluestem.twin.ScanGeometry.offset`), is carried only when it is not (0, 0),
    so that the parameters of an unshifted scan stay what they always were.

    ``specimen`` is a name of :data:`bluestem.twin.SPECIMENS` (its default parameters),
    or ``{"name": name, "parameters": {...}}``; a mapping without parameters is recorded
    as its name, so a twin of default parameters is described as it always was.
    """
    offset = [float(v) for v in scan.get("offset", (0.0, 0.0))]
    shifted = {"offset": offset} if any(offset) else {}
    return {
        "optics": {k: float(v) for k, v in optics.items()},
        "detector": {
            "shape": [int(v) for v in detector["shape"]],
            "pixel_size": float(detector["pixel_size"]),
            "camera_length": float(detector["camera_length"]),
            "counter_depth": int(detector["counter_depth"]),
            "binning": int(detector["binning"]),
        },
        "scan": {
            "shape": [int(v) for v in scan["shape"]],
            "step": [float(v) for v in scan["step"]],
            "rotation": float(scan["rotation"]),
            "flyback": float(scan["flyback"]),
            **shifted,
        },
        "specimen": _specimen_record(specimen),
        "dose_per_frame": float(dose_per_frame),
        "seed": int(seed),
        "faults": str(faults or ""),
    }


def _specimen_record(specimen: str | Mapping[str, Any]) -> str | dict:
    """A name, or ``{"name", "parameters"}`` with plain values (tuples as lists)."""
    if isinstance(specimen, str):
        return specimen
    name, params = str(specimen["name"]), dict(specimen.get("parameters") or {})
    if not params:
        return name
    return {"name": name,
            "parameters": {str(k): list(v) if isinstance(v, tuple) else v
                           for k, v in sorted(params.items())}}  # fmt: skip


def specimen_of(record: str | Mapping[str, Any]):
    """The :class:`bluestem.twin.Specimen` of a ``twin_parameters`` ``specimen`` entry:
    a name (default parameters) or ``{"name", "parameters"}``."""
    from bluestem import twin as tw

    if isinstance(record, str):
        return tw.make_specimen(record)
    params = {k: tuple(v) if isinstance(v, list) else v
              for k, v in dict(record.get("parameters") or {}).items()}  # fmt: skip
    return tw.make_specimen(str(record["name"]), **params)


#: Allowed range of the specimen thickness (m) given to the IOC.
THICKNESS_RANGE = (1e-10, 1e-6)
SPECIMEN_PARAM_FORM = "KEY=VALUE (SI units), e.g. thickness=20e-9 multislice=true"


def _number(text: str, option: str, item: str, key: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{option}: {item!r}: {key} {text!r} is not a finite number "
                         f"(form: {SPECIMEN_PARAM_FORM})")  # fmt: skip
    return value


def _specimen_value(option: str, item: str, key: str, text: str, default: Any) -> Any:
    """``text`` as the type of the specimen field's ``default``."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(f"{option}: {item!r}: {key} is a switch (allowed true or false)")
        return lowered in ("true", "1", "yes", "on")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{option}: {item!r}: {key} is an integer (allowed e.g. "
                             f"{key}={default})") from None  # fmt: skip
    if isinstance(default, tuple):
        parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
        if len(parts) != len(default):
            example = ",".join(map(str, default))
            raise ValueError(f"{option}: {item!r}: {key} is {len(default)} numbers separated "
                             f"by ',' (allowed e.g. {key}={example})")  # fmt: skip
        return tuple(_number(p.strip(), option, item, key) for p in parts)
    value = _number(text, option, item, key)
    if key == "thickness":
        low, high = THICKNESS_RANGE
        if not low <= value <= high:
            raise ValueError(
                f"{option}: {item!r}: thickness = {value:g} m is out of range (allowed "
                f"{low:g} <= thickness <= {high:g} m; SI units: 20e-9 is 20 nm)"
            )
    return value


def parse_specimen_parameters(name: str, items) -> dict[str, Any]:
    """``--specimen-param KEY=VALUE ...`` of specimen ``name``: its parameters, typed as
    the specimen's fields (switches true/false, integers, numbers, tuples as ``a,b``),
    the thickness in 1e-10..1e-6 m, checked by building the specimen.

    Raises
    ------
    ValueError
        Naming the bad item, the specimen's keys and the allowed form or range.
    """
    from dataclasses import fields, is_dataclass

    from bluestem.twin import SPECIMENS, make_specimen

    option = "--specimen-param"
    cls = SPECIMENS.get(name)
    if cls is None:
        raise ValueError(f"--specimen: {name!r} unknown (allowed: {sorted(SPECIMENS)})")
    defaults = {f.name: f.default for f in fields(cls)} if is_dataclass(cls) else {}
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = (part.strip() for part in str(item).partition("="))
        if not sep or key not in defaults or not text:
            raise ValueError(
                f"{option}: {item!r} is not KEY=VALUE with a parameter of specimen {name!r} "
                f"(allowed keys: {', '.join(sorted(defaults)) or 'none'}; form: "
                f"{SPECIMEN_PARAM_FORM})"
            )
        if key in params:
            raise ValueError(f"{option}: {key} is given twice (form: {SPECIMEN_PARAM_FORM})")
        params[key] = _specimen_value(option, item, key, text, defaults[key])
    try:
        make_specimen(name, **params)
    except ValueError as exc:
        raise ValueError(f"{option}: specimen {name!r} refuses {params}: {exc}") from None
    return params


def specimen_truth(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The truth file's ``specimen``: name, every parameter given, the hidden keys and,
    for a multislice specimen, the thickness rendered (whole slices: ``rendered_thickness``
    = ``slices`` x ``slice_thickness``)."""
    from bluestem.twin import make_specimen

    _, hidden = split_specimen(params)
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    out: dict[str, Any] = {"name": name, "parameters": plain, "hidden": sorted(hidden)}
    spec = make_specimen(name, **params)
    if getattr(spec, "multislice", False) and hasattr(spec, "slice_stack"):
        stack = spec.slice_stack()
        out.update(slices=stack.slices, slice_thickness=stack.thickness,
                   rendered_thickness=stack.depth)  # fmt: skip
    return out


def _acquisition(params: Mapping[str, Any]) -> dict:
    """The per-acquisition arguments of a twin (scan, dose, seed, faults)."""
    from bluestem import twin as tw

    scan = dict(params["scan"])
    scan["shape"] = tuple(scan["shape"])
    scan["step"] = tuple(scan["step"])
    if "offset" in scan:
        scan["offset"] = tuple(scan["offset"])
    faults = tw.FaultSchedule.parse(params["faults"]) if params.get("faults") else None
    return {
        "scan": tw.ScanGeometry(**scan),
        "dose_per_frame": params["dose_per_frame"],
        "seed": params["seed"],
        "faults": faults,
    }


def twin_from_parameters(params: Mapping[str, Any] | str):
    """Build a :class:`bluestem.twin.Twin` from :func:`twin_parameters` (or its JSON).

    Backward compatible: a ``specimen`` that is a plain name (every file written before
    specimen parameters existed) rebuilds the specimen of default parameters."""
    from bluestem import twin as tw

    if isinstance(params, str | bytes):
        params = json.loads(params)
    det = dict(params["detector"])
    det["shape"] = tuple(det["shape"])
    acquisition = _acquisition(params)
    return tw.Twin(
        tw.Optics(**params["optics"]),
        tw.DetectorModel(**det),
        acquisition.pop("scan"),
        specimen_of(params["specimen"]),
        **acquisition,
    )


class TwinReuse:
    """The last twin, reused while the optics, detector and specimen stay the same.

    Building a twin is cheap, but its frame cache is not: the first scan of SrTiO3 at
    128² computes 1024 noiseless frames (about 1.4 s on the 2-core machine), longer than a
    128 × 128 scan takes at full rate. Noiseless frames depend only on the optics, the
    detector and the specimen, so an acquisition that changes only scan, dose, seed or
    faults shares the previous twin's cache (:meth:`bluestem.twin.Twin.for_acquisition`)
    and its frames stay exact.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: str | None = None
        self._twin = None

    def twin_for(self, params: Mapping[str, Any]):
        """A twin for ``params`` (:func:`twin_parameters`), sharing the last one's cache
        when its optics, detector and specimen are equal."""
        key = json.dumps(
            [params["optics"], params["detector"], params["specimen"]], sort_keys=True
        )
        with self._lock:
            if key == self._key and self._twin is not None:
                twin = self._twin.for_acquisition(**_acquisition(params))
            else:
                twin = twin_from_parameters(params)
            self._key, self._twin = key, twin
        return twin


def build_render(twin, *, position: tuple[float, float] | None = None):
    """The engine's ``render(first, count)``: scan order, or all at one beam position
    (y, x) in m from the scan centre (``twin.scan.offset`` on the specimen)."""
    if position is None:
        return twin.render
    where = np.asarray(position, dtype=np.float64)
    if twin.scan.offset != (0.0, 0.0):
        where = where + np.asarray(twin.scan.offset)

    def render_at(first: int, count: int) -> np.ndarray:
        positions = np.broadcast_to(where, (count, 2)).copy()
        return twin.render_at(positions, np.arange(first, first + count, dtype=np.int64))

    return render_at
