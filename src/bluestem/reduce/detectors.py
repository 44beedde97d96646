"""Virtual detectors: named weight masks over the diffraction frame.

Geometry (pixel centres at integer (row, column); ``rho`` and ``phi`` measured from the
spec's centre (cy, cx)):

- ``rho = hypot(row - cy, column - cx)`` in pixels;
- ``phi = atan2(row - cy, column - cx)`` in degrees in [0, 360): from the detector +x
  axis (increasing column) towards +y (increasing row).

Kinds and their masks (weight 1 inside, 0 outside):

- ``disk`` (radius): ``rho <= radius``;
- ``annulus`` (inner, outer): ``inner < rho <= outer``; with ``inner = 0`` the centre
  pixel is included, so a disk of radius R and an annulus (R, R2) tile the disk of R2;
- ``sectors`` (inner, outer, n, rotation_deg): the annulus cut into n equal azimuthal
  segments; segment i holds the pixels with ``(phi - rotation_deg) mod 360`` in
  ``[i * 360 / n, (i + 1) * 360 / n)``; the segments tile the annulus;
- ``quadrants`` (inner, outer, rotation_deg): sectors with n = 4;
- ``user`` (weights): any finite float weights of the frame shape, kept as float32.

A segmented detector ``name`` yields the images ``name0 .. name{n-1}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["KINDS", "VirtualDetector", "decode_array", "encode_array", "farthest_distance"]

#: kind -> (required parameters, optional parameters with their defaults)
KINDS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "disk": (("radius",), {}),
    "annulus": (("inner", "outer"), {}),
    "quadrants": (("outer",), {"inner": 0.0, "rotation_deg": 0.0}),
    "sectors": (("outer", "n"), {"inner": 0.0, "rotation_deg": 0.0}),
    "user": (("weights",), {}),
}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Most segments a ``sectors`` detector may have.
MAX_SECTORS = 360


def encode_array(array: np.ndarray, dtype: str) -> dict[str, Any]:
    """An array as JSON: shape, dtype, base64 of its little-endian bytes, their sha256."""
    raw = np.ascontiguousarray(array, dtype=dtype).tobytes()
    return {
        "shape": list(np.shape(array)),
        "dtype": dtype,
        "base64": base64.b64encode(raw).decode("ascii"),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


def decode_array(d: Mapping[str, Any], what: str, dtype: str) -> np.ndarray:
    """Inverse of :func:`encode_array`; the bytes are verified against their sha256."""
    try:
        raw = base64.b64decode(d["base64"], validate=True)
        if hashlib.sha256(raw).hexdigest() != d["sha256"]:
            raise ValueError("the bytes do not match their sha256")
        if d["dtype"] != dtype:
            raise ValueError(f"dtype {d['dtype']!r}; allowed: {dtype!r}")
        return np.frombuffer(raw, dtype).reshape(d["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{what}: bad stored array: {exc}") from None


def farthest_distance(frame_shape: tuple[int, int], centre: tuple[float, float]) -> float:
    """Distance in pixels from ``centre`` to the farthest pixel centre of the frame."""
    ky, kx = frame_shape
    cy, cx = centre
    return math.hypot(max(cy, ky - 1 - cy), max(cx, kx - 1 - cx))


def _number(name: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"detector {name!r}: {key} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"detector {name!r}: {key} must be finite, got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class VirtualDetector:
    """A named virtual detector.

    Parameters
    ----------
    name : str
        An identifier (letters, digits, underscore; not starting with a digit). It names
        the image, or, for a segmented detector, the prefix of ``name0``, ``name1``, ...
    kind : str
        One of ``disk``, ``annulus``, ``quadrants``, ``sectors``, ``user`` (see the module
        docstring for the geometry).
    params : dict
        ``disk``: ``radius``; ``annulus``: ``inner``, ``outer``; ``quadrants``: ``outer``,
        optional ``inner`` (0) and ``rotation_deg`` (0); ``sectors``: ``outer``, ``n``,
        optional ``inner`` (0) and ``rotation_deg`` (0); ``user``: ``weights``, a 2-D
        array of finite numbers. Radii in pixels, angles in degrees. Stored normalised:
        optional parameters filled in, numbers as float (``n`` as int), weights as a
        read-only float32 array.

    Raises
    ------
    ValueError
        For an unknown kind, a missing or unknown parameter, or a value out of range.
        Whether radii fit the frame is checked by :class:`ReductionSpec`.
    """

    name: str
    kind: str
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"detector name {self.name!r} is not allowed; allowed: an identifier "
                "(letters, digits, underscore, not starting with a digit)"
            )
        if self.kind not in KINDS:
            raise ValueError(
                f"detector {self.name!r}: unknown kind {self.kind!r}; allowed: {', '.join(KINDS)}"
            )
        if not isinstance(self.params, Mapping):
            raise ValueError(
                f"detector {self.name!r}: params must be a dict, got {type(self.params).__name__}"
            )
        required, optional = KINDS[self.kind]
        unknown = sorted(set(self.params) - set(required) - set(optional))
        missing = [k for k in required if k not in self.params]
        if unknown or missing:
            allowed = ", ".join([*required, *(f"{k} (optional)" for k in optional)])
            what = f"unknown {unknown}" if unknown else f"missing {missing}"
            raise ValueError(
                f"detector {self.name!r} ({self.kind}): {what} parameters; allowed: {allowed}"
            )
        merged = {**optional, **self.params}
        ordered = {k: merged[k] for k in (*required, *optional)}
        object.__setattr__(self, "params", self._normalised(ordered))

    def _normalised(self, raw: dict[str, Any]) -> dict[str, Any]:
        name, kind = self.name, self.kind
        if kind == "user":
            try:
                weights = np.array(raw["weights"], dtype=np.float32)
            except (TypeError, ValueError):
                raise ValueError(
                    f"mask {name!r}: weights must be a 2-D array of numbers"
                ) from None
            if weights.ndim != 2:
                raise ValueError(
                    f"mask {name!r} has shape {weights.shape}; allowed: a 2-D frame shape"
                )
            if not np.isfinite(weights).all():
                raise ValueError(f"mask {name!r} has non-finite weights; allowed: finite")
            weights.flags.writeable = False
            return {"weights": weights}
        out = {k: _number(name, k, v) for k, v in raw.items() if k != "n"}
        if kind == "disk":
            if out["radius"] < 0:
                raise ValueError(
                    f"detector {name!r}: radius {out['radius']:g} < 0; allowed: radius >= 0"
                )
            return out
        if not 0 <= out["inner"] < out["outer"]:
            raise ValueError(
                f"detector {name!r}: inner {out['inner']:g}, outer {out['outer']:g}; "
                "allowed: 0 <= inner < outer"
            )
        if kind == "sectors":
            n = raw["n"]
            if isinstance(n, bool) or not isinstance(n, int | np.integer):
                raise ValueError(f"detector {name!r}: n must be an integer, got {n!r}")
            if not 1 <= n <= MAX_SECTORS:
                raise ValueError(f"detector {name!r}: n = {n}; allowed: 1 <= n <= {MAX_SECTORS}")
            out["n"] = int(n)
        return out

    @property
    def segments(self) -> int:
        """Number of images this detector yields."""
        if self.kind == "quadrants":
            return 4
        if self.kind == "sectors":
            return self.params["n"]
        return 1

    @property
    def image_names(self) -> tuple[str, ...]:
        """The image names: ``(name,)``, or ``name0 .. name{n-1}`` when segmented."""
        if self.kind in ("quadrants", "sectors"):
            return tuple(f"{self.name}{i}" for i in range(self.segments))
        return (self.name,)

    def check(self, frame_shape: tuple[int, int], centre: tuple[float, float]) -> None:
        """Raise ValueError unless the detector fits this frame and selects a pixel."""
        name, p = self.name, self.params
        if self.kind == "user":
            shape = p["weights"].shape
            if shape != tuple(frame_shape):
                raise ValueError(
                    f"mask {name!r} has shape {shape}; allowed: the frame shape "
                    f"{tuple(frame_shape)}"
                )
            if not p["weights"].any():
                raise ValueError(f"mask {name!r} is all zero; allowed: a non-zero weight")
            return
        limit = farthest_distance(frame_shape, centre)
        for key in ("radius", "outer"):
            if key in p and p[key] > limit:
                raise ValueError(
                    f"detector {name!r}: {key} {p[key]:g} is beyond the frame; allowed: "
                    f"0 <= {key} <= {limit:.6g} (the distance from the centre "
                    f"{tuple(centre)} to the farthest pixel of the {tuple(frame_shape)} frame)"
                )
        empty = ~self.masks(frame_shape, centre).reshape(self.segments, -1).any(axis=1)
        if empty.any():
            which = [self.image_names[i] for i in np.flatnonzero(empty)]
            raise ValueError(
                f"detector {name!r} ({self.kind}, {self._describe()}): {', '.join(which)} "
                f"select no pixel of the {tuple(frame_shape)} frame centred at "
                f"{tuple(centre)}; allowed: radii that enclose at least one pixel centre"
            )

    def masks(self, frame_shape: tuple[int, int], centre: tuple[float, float]) -> np.ndarray:
        """Weights, float32 (segments, ky, kx), for a frame and centre (no checks)."""
        ky, kx = frame_shape
        if self.kind == "user":
            return self.params["weights"][None].copy()
        cy, cx = centre
        dy = np.arange(ky, dtype=np.float64)[:, None] - cy
        dx = np.arange(kx, dtype=np.float64)[None, :] - cx
        rho2 = dy * dy + dx * dx
        p = self.params
        if self.kind == "disk":
            return (rho2 <= p["radius"] ** 2).astype(np.float32)[None]
        ring = rho2 <= p["outer"] ** 2
        if p["inner"] > 0:
            ring &= rho2 > p["inner"] ** 2
        if self.kind == "annulus":
            return ring.astype(np.float32)[None]
        n = self.segments
        phi = np.degrees(np.arctan2(dy, dx))
        rel = np.mod(phi - p["rotation_deg"], 360.0)
        # np.mod can round a tiny negative to exactly 360.0: that pixel belongs to segment 0.
        seg = np.floor(rel / (360.0 / n)).astype(np.int64) % n
        out = np.zeros((n, ky, kx), np.float32)
        for i in range(n):
            out[i][ring & (seg == i)] = 1.0
        return out

    def _describe(self) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in self.params.items())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; user weights as base64 float32 (little-endian) + sha256."""
        if self.kind != "user":
            return {"name": self.name, "kind": self.kind, "params": dict(self.params)}
        weights = encode_array(self.params["weights"], "<f4")
        return {"name": self.name, "kind": "user", "params": {"weights": weights}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VirtualDetector:
        """Inverse of :meth:`to_dict` (user weights verified against their sha256)."""
        if not isinstance(d, Mapping) or set(d) != {"name", "kind", "params"}:
            raise ValueError(f"a detector dict needs exactly name, kind, params; got {d!r}")
        params = dict(d["params"])
        if d["kind"] == "user" and isinstance(params.get("weights"), Mapping):
            params["weights"] = decode_array(params["weights"], f"mask {d['name']!r}", "<f4")
        return cls(d["name"], d["kind"], params)

    def _canonical(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VirtualDetector):
            return NotImplemented
        return self._canonical() == other._canonical()

    def __hash__(self) -> int:
        return hash(self._canonical())

    def __repr__(self) -> str:
        if self.kind == "user":
            shape = self.params["weights"].shape
            return f"VirtualDetector({self.name!r}, 'user', {{'weights': <float32 {shape}>}})"
        return f"VirtualDetector({self.name!r}, {self.kind!r}, {dict(self.params)!r})"
