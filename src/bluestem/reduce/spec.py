"""The reduction spec: everything needed to recompute a run's virtual images bit for bit."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bluestem.reduce.detectors import (
    VirtualDetector,
    decode_array,
    encode_array,
    farthest_distance,
)

__all__ = ["MAX_FRAME", "RESERVED_NAMES", "SPEC_VERSION", "ReductionSpec"]

#: Version of the ``to_dict`` layout.
SPEC_VERSION = 1
#: Largest frame side accepted (pixels).
MAX_FRAME = 4096
#: Image names the reducer itself produces.
RESERVED_NAMES = frozenset({"com_y", "com_x", "com_y_mrad", "com_x_mrad", "sum_dp", "max_dp"})

_FIELDS = (
    "frame_shape", "centre", "detectors", "com", "com_radius", "com_mask", "angle_per_pixel",
    "rotation_deg", "flip", "sum_dp", "max_dp",
)  # fmt: skip


def _flag(name: str, value: Any, *, optional: bool = False) -> bool | None:
    if optional and value is None:
        return None
    if not isinstance(value, bool | np.bool_):
        allowed = "True, False or None" if optional else "True or False"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return bool(value)


def _real(name: str, value: Any, allowed: str, ok) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number or None, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"{name} = {value!r}; allowed: {allowed}")
    return value


@dataclass(frozen=True, eq=False)
class ReductionSpec:
    """What a :class:`Reducer` computes from each frame.

    Parameters
    ----------
    frame_shape : tuple of int
        Detector frame (ky, kx), each side in 2..4096.
    centre : tuple of float, optional
        Pattern centre (cy, cx) in pixels, inside the frame. Default ``(ky // 2, kx // 2)``:
        the pixel where an fftshift-centred pattern has its zero frequency, which is where
        the physics twin puts the optical axis. Stored resolved.
    detectors : tuple of VirtualDetector
        Virtual detectors; their image names must be distinct and not reserved.
    com : bool
        Compute the centre of mass ``com_y``, ``com_x`` (pixels, relative to ``centre``).
    com_radius : float, optional
        COM only over the pixels with ``rho <= com_radius``; None: the whole frame.
    com_mask : array of bool, optional
        COM only over these pixels (the frame shape); with ``com_radius``, over both.
    angle_per_pixel : float, optional
        Scattering angle per pixel in rad; adds ``com_y_mrad`` and ``com_x_mrad``.
    rotation_deg, flip : float and bool, optional
        Scan-to-detector relation for DPC (see :func:`bluestem.reduce.rotate_com`); None:
        estimate it from the data (:func:`bluestem.reduce.estimate_rotation`).
    sum_dp, max_dp : bool
        Accumulate the sum and the maximum diffraction pattern.

    Raises
    ------
    ValueError
        Naming the offending value and the allowed range.
    """

    frame_shape: tuple[int, int]
    centre: tuple[float, float] | None = None
    detectors: tuple[VirtualDetector, ...] = ()
    com: bool = True
    com_radius: float | None = None
    com_mask: np.ndarray | None = None
    angle_per_pixel: float | None = None
    rotation_deg: float | None = None
    flip: bool | None = None
    sum_dp: bool = True
    max_dp: bool = True

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(n) for n in self.frame_shape)
            exact = shape == tuple(self.frame_shape)
        except (TypeError, ValueError):
            shape, exact = (), False
        if not exact or len(shape) != 2 or not all(2 <= n <= MAX_FRAME for n in shape):
            raise ValueError(
                f"frame_shape {self.frame_shape!r}; allowed: two integers (ky, kx) in "
                f"2..{MAX_FRAME}"
            )
        set_ = object.__setattr__
        set_(self, "frame_shape", shape)
        centre = (shape[0] // 2, shape[1] // 2) if self.centre is None else self.centre
        try:
            cy, cx = (float(v) for v in centre)
        except (TypeError, ValueError):
            raise ValueError(f"centre must be a pair (cy, cx) in pixels, got {centre!r}") from None
        if not (0 <= cy <= shape[0] - 1 and 0 <= cx <= shape[1] - 1):
            raise ValueError(
                f"centre {tuple(centre)!r} is outside the frame; allowed: 0 <= cy <= "
                f"{shape[0] - 1}, 0 <= cx <= {shape[1] - 1}"
            )
        set_(self, "centre", (cy, cx))
        self._check_detectors()
        for name in ("com", "sum_dp", "max_dp"):
            set_(self, name, _flag(name, getattr(self, name)))
        set_(self, "flip", _flag("flip", self.flip, optional=True))
        limit = farthest_distance(shape, (cy, cx))
        set_(self, "com_radius", _real(
            "com_radius", self.com_radius,
            f"0 < com_radius <= {limit:.6g} (the farthest pixel from the centre) or None",
            lambda r: 0 < r <= limit,
        ))  # fmt: skip
        self._check_com_mask()
        if self.com and self.com_radius is not None and not self._com_region().any():
            raise ValueError(
                f"com_radius {self.com_radius:g} encloses no pixel centre around "
                f"{self.centre}"
                + (" inside com_mask" if self.com_mask is not None else "")
                + "; allowed: a radius that encloses at least one"
            )
        set_(self, "angle_per_pixel", _real(
            "angle_per_pixel", self.angle_per_pixel,
            "a finite angle > 0 and < 1 rad per pixel, or None", lambda a: 0 < a < 1,
        ))  # fmt: skip
        set_(self, "rotation_deg", _real(
            "rotation_deg", self.rotation_deg, "a finite angle in degrees or None",
            lambda a: True,
        ))  # fmt: skip
        if not (self.detectors or self.com or self.sum_dp or self.max_dp):
            raise ValueError(
                "the spec reduces nothing; allowed: at least one detector, com, sum_dp or max_dp"
            )

    def _check_detectors(self) -> None:
        dets = self.detectors
        if isinstance(dets, VirtualDetector) or not isinstance(dets, Iterable):
            raise ValueError(f"detectors must be a sequence of VirtualDetector, got {dets!r}")
        dets = tuple(dets)
        seen: set[str] = set()
        for det in dets:
            if not isinstance(det, VirtualDetector):
                raise ValueError(f"detectors must be VirtualDetector objects, got {det!r}")
            det.check(self.frame_shape, self.centre)
            for image in det.image_names:
                if image in RESERVED_NAMES:
                    raise ValueError(
                        f"detector {det.name!r}: image name {image!r} is reserved "
                        f"({', '.join(sorted(RESERVED_NAMES))}); allowed: any other name"
                    )
                if image in seen:
                    raise ValueError(
                        f"detector {det.name!r}: image name {image!r} is used twice; "
                        "allowed: distinct image names"
                    )
                seen.add(image)
        object.__setattr__(self, "detectors", dets)

    def _check_com_mask(self) -> None:
        mask = self.com_mask
        if mask is None:
            return
        if isinstance(mask, Mapping):  # as stored by to_dict
            packed = decode_array(mask, "com_mask", "|u1")
            mask = np.unpackbits(packed)[: int(np.prod(mask["frame_shape"]))].reshape(
                mask["frame_shape"]
            )
        mask = np.asarray(mask)
        if mask.shape != self.frame_shape:
            raise ValueError(
                f"com_mask has shape {mask.shape}; allowed: the frame shape {self.frame_shape}"
            )
        if mask.dtype.kind not in "biuf" or not np.isfinite(mask).all():
            raise ValueError(f"com_mask has dtype {mask.dtype}; allowed: bool or 0/1 numbers")
        mask = mask != 0
        if not mask.any():
            raise ValueError("com_mask selects no pixel; allowed: a mask with at least one")
        mask.setflags(write=False)
        object.__setattr__(self, "com_mask", mask)

    def _com_region(self) -> np.ndarray:
        """Boolean (ky, kx): the pixels the COM sums over."""
        region = np.ones(self.frame_shape, bool) if self.com_mask is None else self.com_mask
        if self.com_radius is None:
            return region
        ky, kx = self.frame_shape
        dy = np.arange(ky, dtype=np.float64)[:, None] - self.centre[0]
        dx = np.arange(kx, dtype=np.float64)[None, :] - self.centre[1]
        return region & (dy * dy + dx * dx <= self.com_radius**2)

    @property
    def detector_images(self) -> tuple[str, ...]:
        """The detector image names, in order."""
        return tuple(name for det in self.detectors for name in det.image_names)

    @property
    def image_names(self) -> tuple[str, ...]:
        """All names :meth:`Reducer.images` returns, in order."""
        names = list(self.detector_images)
        if self.com:
            names += ["com_y", "com_x"]
            if self.angle_per_pixel is not None:
                names += ["com_y_mrad", "com_x_mrad"]
        names += [n for n in ("sum_dp", "max_dp") if getattr(self, n)]
        return tuple(names)

    def masks(self) -> dict[str, np.ndarray]:
        """Each detector image name -> its float32 (ky, kx) weights (for drawing)."""
        out: dict[str, np.ndarray] = {}
        for det in self.detectors:
            for name, mask in zip(
                det.image_names, det.masks(self.frame_shape, self.centre), strict=True
            ):
                out[name] = mask
        return out

    @classmethod
    def default(
        cls,
        frame_shape: tuple[int, int],
        *,
        centre: tuple[float, float] | None = None,
        bf_radius: float | None = None,
        adf: tuple[float, float] | None = None,
        angle_per_pixel: float | None = None,
    ) -> ReductionSpec:
        """A bright-field disk ``bf``, an annular dark-field ``adf`` and the COM.

        Parameters
        ----------
        frame_shape : tuple of int
        centre : tuple of float, optional
            Default ``(ky // 2, kx // 2)``.
        bf_radius : float, optional
            Default: a quarter of the smaller frame side.
        adf : tuple of float, optional
            (inner, outer) radii. Default ``(1.2 * bf_radius, 0.95 * e)``, e the distance
            from the centre to the nearest pixel centre on the frame's edge.
        angle_per_pixel : float, optional
            rad per pixel; adds the COM in mrad.
        """
        probe = cls(frame_shape, centre=centre, sum_dp=False, max_dp=True, com=False)
        (ky, kx), (cy, cx) = probe.frame_shape, probe.centre
        bf = min(ky, kx) / 4 if bf_radius is None else bf_radius
        if adf is None:
            edge = min(cy, cx, ky - 1 - cy, kx - 1 - cx)
            adf = (1.2 * bf, 0.95 * edge)
        try:
            inner, outer = adf
        except (TypeError, ValueError):
            raise ValueError(f"adf must be (inner, outer) radii, got {adf!r}") from None
        detectors = (
            VirtualDetector("bf", "disk", {"radius": bf}),
            VirtualDetector("adf", "annulus", {"inner": inner, "outer": outer}),
        )
        return cls(
            probe.frame_shape, centre=probe.centre, detectors=detectors,
            angle_per_pixel=angle_per_pixel,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; ``from_dict(to_dict())`` reproduces the spec exactly."""
        return {
            "version": SPEC_VERSION,
            "frame_shape": list(self.frame_shape),
            "centre": list(self.centre),
            "detectors": [d.to_dict() for d in self.detectors],
            "com": self.com,
            "com_radius": self.com_radius,
            # Only when set: the digests of specs without one stay what they were.
            **(
                {}
                if self.com_mask is None
                else {
                    "com_mask": {
                        **encode_array(np.packbits(self.com_mask), "|u1"),
                        "frame_shape": list(self.frame_shape),
                    }
                }
            ),
            "angle_per_pixel": self.angle_per_pixel,
            "rotation_deg": self.rotation_deg,
            "flip": self.flip,
            "sum_dp": self.sum_dp,
            "max_dp": self.max_dp,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReductionSpec:
        """Rebuild a spec from :meth:`to_dict` output (or the same parsed from JSON)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a spec dict is needed, got {type(d).__name__}")
        if d.get("version") != SPEC_VERSION:
            raise ValueError(f"spec version {d.get('version')!r}; allowed: {SPEC_VERSION}")
        unknown = sorted(set(d) - {"version", *_FIELDS})
        if unknown:
            raise ValueError(
                f"unknown spec keys {unknown}; allowed: version, {', '.join(_FIELDS)}"
            )
        kw = {k: d[k] for k in _FIELDS if k in d}
        kw["detectors"] = tuple(VirtualDetector.from_dict(x) for x in d.get("detectors", ()))
        return cls(**kw)

    def canonical_json(self) -> str:
        """The spec as canonical JSON (sorted keys, no spaces): what :meth:`digest` hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def digest(self) -> str:
        """sha256 hex digest of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReductionSpec):
            return NotImplemented
        return self.canonical_json() == other.canonical_json()

    def __hash__(self) -> int:
        return hash(self.canonical_json())
