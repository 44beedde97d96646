"""Hidden state of the simulated instrument: what a real column has and no PV says.

A real column is never exactly what its PVs read back: residual aberrations of the
alignment add to the setpoints, the specimen sits at some height and drifts. ``bluestem
ioc sim --column/--drift/--tilt`` gives the twin such a state (:class:`HiddenState`); the
PVs, their readbacks and the file's metadata keep describing only what the PVs say, and
the truth goes to the IOC's log and to a private JSON file (:class:`TruthFile`,
``--truth``), for tests and benchmarks only.

Conventions (SI units; ``+z`` points up, towards the probe-forming lens, against the
beam):

* ``C1_effective = C1_setpoint + C1_residual - dz`` with ``dz = StageZ + x_c tan(tilt)``
  (``x_c`` the specimen x of the scan centre): a higher specimen lies above the beam's
  crossover, which is underfocus, i.e. a more negative C1 (positive C1 is overfocus,
  :class:`bluestem.twin.Optics`).
* Two-fold astigmatism adds as a complex number: ``A1 e^{2i phi}`` of the setpoint plus
  that of the residual.
* C3 adds to ``MIC:Cs_RBV`` (the residual is the column's deviation from its nominal Cs).
* The specimen coordinate of the scan centre is ``scan offset - stage - drift``
  (:class:`Placement`): a positive StageX or drift moves the specimen +x, so a feature at
  specimen x appears at scan position ``x + StageX``; a positive ``SCAN:OffsetX`` moves
  the scan centre +x on the specimen.
"""

from __future__ import annotations

import cmath
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .source import Readback

__all__ = [
    "COLUMN_FORM",
    "HIDDEN_SPECIMEN_PARAMETERS",
    "LOG",
    "Column",
    "HiddenState",
    "Placement",
    "TruthFile",
    "effective_optics",
    "parse_column",
    "parse_drift",
    "parse_tilt",
    "place",
    "split_specimen",
]

#: The IOC's log of the true state (INFO; ``bluestem ioc sim`` sends it to stderr).
LOG = logging.getLogger("bluestem.ioc.hidden")

COLUMN_FORM = (
    "C1=<m>,A1=<m>@<deg>deg,C3=<m> (SI units, any of the three), "
    "e.g. C1=85e-9,A1=20e-9@30deg,C3=1.2e-3"
)
#: Largest residuals accepted (m): C1 and |A1| up to 10 um, C3 up to 10 mm.
C1_MAX = 1e-5
A1_MAX = 1e-5
C3_MAX = 1e-2
#: Largest drift speed per axis (nm/s) and specimen slope (deg) accepted.
DRIFT_MAX = 1000.0
TILT_MAX = 80.0
#: Specimen parameters that are hidden state: the file and the PVs never reveal them.
HIDDEN_SPECIMEN_PARAMETERS = ("thickness",)


@dataclass(frozen=True)
class Column:
    """Residual aberrations of the column (added to the PV setpoints).

    Attributes
    ----------
    c1 : float
        Defocus C1 in m (positive = overfocus).
    a1, a1_angle : float
        Two-fold astigmatism |A1| in m and its azimuth in rad.
    c3 : float
        Spherical aberration in m, added to ``MIC:Cs_RBV``.
    """

    c1: float = 0.0
    a1: float = 0.0
    a1_angle: float = 0.0
    c3: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.c1 or self.a1 or self.c3)

    def to_json(self) -> dict:
        """The residuals in SI units (the angle also in degrees)."""
        return {"C1": self.c1, "A1": self.a1, "A1_angle": self.a1_angle,
                "A1_angle_deg": math.degrees(self.a1_angle), "C3": self.c3}  # fmt: skip


@dataclass(frozen=True)
class HiddenState:
    """Everything of the simulated instrument that no PV shows.

    Attributes
    ----------
    column : Column
        Residual aberrations.
    drift : tuple of float
        Specimen velocity (vy, vx) in m/s, since the IOC started.
    tilt : float
        Slope of the specimen plane along x in rad: its height is ``x tan(tilt)``.
    """

    column: Column = field(default_factory=Column)
    drift: tuple[float, float] = (0.0, 0.0)
    tilt: float = 0.0

    @property
    def active(self) -> bool:
        """True when the twin differs from what the PVs describe."""
        return bool(self.column) or any(self.drift) or bool(self.tilt)

    def drift_at(self, elapsed: float) -> tuple[float, float]:
        """Drift displacement (y, x) in m after ``elapsed`` s."""
        return (self.drift[0] * elapsed, self.drift[1] * elapsed)

    def height(self, x: float) -> float:
        """Height in m of the specimen plane at specimen x (m)."""
        return x * math.tan(self.tilt) if self.tilt else 0.0

    def to_json(self) -> dict:
        """The hidden state in SI units (m, m/s, rad; angles also in degrees)."""
        return {
            "column": self.column.to_json(),
            "drift": list(self.drift),
            "tilt": self.tilt,
            "tilt_deg": math.degrees(self.tilt),
        }

    def describe(self) -> str:
        """One line for the IOC's log."""
        c = self.column
        return (
            f"column residual C1 {c.c1 * 1e9:+.3f} nm, A1 {c.a1 * 1e9:.3f} nm @ "
            f"{math.degrees(c.a1_angle):.2f} deg, C3 {c.c3 * 1e3:+.4f} mm; drift (y, x) "
            f"({self.drift[0] * 1e9:+.3f}, {self.drift[1] * 1e9:+.3f}) nm/s; specimen tilt "
            f"{math.degrees(self.tilt):+.3f} deg along x"
        )


def _number(text: str, option: str, what: str, form: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"{option}: {what} {text!r} is not a number (allowed form: {form})"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{option}: {what} {text!r} is not finite (allowed form: {form})")
    return value


def _within(value: float, limit: float, option: str, what: str, units: str, text: str):
    if abs(value) > limit:
        hint = "; SI units: 85e-9 is 85 nm" if units == "m" else ""
        raise ValueError(
            f"{option}: {text!r}: {what} = {value:g} {units} is out of range "
            f"(allowed -{limit:g} <= {what} <= {limit:g} {units}{hint})"
        )
    return value


def parse_column(text: str) -> Column:
    """``--column``: ``C1=85e-9,A1=20e-9@30deg,C3=1.2e-3`` (m; A1 azimuth in deg).

    Raises
    ------
    ValueError
        Naming the bad item and the allowed form and range.
    """
    option = "--column"
    values: dict[str, Any] = {}
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise ValueError(
            f"{option}: {text!r} is empty or has an empty item (allowed form: {COLUMN_FORM})"
        )
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        key = key.upper()
        if not sep or key not in ("C1", "A1", "C3"):
            raise ValueError(f"{option}: {item!r} is not KEY=VALUE with KEY C1, A1 or C3 "
                             f"(allowed form: {COLUMN_FORM})")  # fmt: skip
        if key in values:
            raise ValueError(
                f"{option}: {key} is given twice in {text!r} (allowed form: {COLUMN_FORM})"
            )
        if key == "A1":
            magnitude, _, angle = value.partition("@")
            angle = angle.strip()
            if angle.lower().endswith("deg"):
                angle = angle[:-3]
            a1 = _number(magnitude.strip(), option, "A1", COLUMN_FORM)
            if a1 < 0:
                raise ValueError(
                    f"{option}: {item!r}: |A1| = {a1:g} m is negative "
                    f"(allowed 0 <= A1 <= {A1_MAX:g} m; the azimuth goes after '@')"
                )
            _within(a1, A1_MAX, option, "A1", "m", item)
            phi = _number(angle.strip() or "0", option, "A1 azimuth", COLUMN_FORM)
            _within(phi, 180.0, option, "A1 azimuth", "deg", item)
            values[key] = (a1, math.radians(phi))
        else:
            limit = C1_MAX if key == "C1" else C3_MAX
            values[key] = _within(
                _number(value, option, key, COLUMN_FORM), limit, option, key, "m", item
            )
    a1, a1_angle = values.get("A1", (0.0, 0.0))
    return Column(c1=values.get("C1", 0.0), a1=a1, a1_angle=a1_angle, c3=values.get("C3", 0.0))


def parse_drift(text: str) -> tuple[float, float]:
    """``--drift``: ``VY,VX`` in nm/s, or one number (along x); returns (vy, vx) in m/s."""
    option, form = "--drift", "'VY,VX' in nm/s or one number along x, e.g. --drift=0.5,-1"
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (1, 2):
        raise ValueError(f"{option}: {text!r} has {len(parts)} values (allowed form: {form})")
    speeds = [_number(p, option, "speed", form) for p in parts]
    for axis, v in zip("yx" if len(speeds) == 2 else "x", speeds, strict=True):
        _within(v, DRIFT_MAX, option, f"v{axis}", "nm/s", text)
    vy, vx = speeds if len(speeds) == 2 else (0.0, speeds[0])
    return (vy * 1e-9, vx * 1e-9)


def parse_tilt(text: str) -> float:
    """``--tilt``: slope of the specimen plane along x in deg; returns rad."""
    option, form = "--tilt", f"degrees, -{TILT_MAX:g} <= DEG <= {TILT_MAX:g}"
    return math.radians(
        _within(_number(text, option, "tilt", form), TILT_MAX, option, "tilt", "deg", text)
    )


def split_specimen(params: Mapping[str, Any]) -> tuple[dict, dict]:
    """``(described, hidden)``: the specimen parameters the file may record, and those
    that are hidden state (:data:`HIDDEN_SPECIMEN_PARAMETERS`)."""
    described = {k: v for k, v in params.items() if k not in HIDDEN_SPECIMEN_PARAMETERS}
    hidden = {k: v for k, v in params.items() if k in HIDDEN_SPECIMEN_PARAMETERS}
    return described, hidden


def effective_optics(optics: Mapping[str, float], column: Column, dz: float) -> dict:
    """The optics the probe really has: ``optics`` (the readbacks, SI) plus the column's
    residuals, C1 lowered by the height ``dz`` (m) of the specimen."""
    out = {k: float(v) for k, v in optics.items()}
    out["defocus"] = out["defocus"] + column.c1 - dz
    if column.a1:
        setpoint = out["astigmatism"] * cmath.exp(2j * out["astigmatism_angle"])
        total = setpoint + column.a1 * cmath.exp(2j * column.a1_angle)
        out["astigmatism"] = abs(total)
        out["astigmatism_angle"] = cmath.phase(total) / 2.0
    out["cs"] = out["cs"] + column.c3
    return out


@dataclass(frozen=True)
class Placement:
    """Where the specimen sits under the beam during one acquisition (m).

    Attributes
    ----------
    scan_offset, stage, drift : tuple of float
        (y, x): ``SCAN:OffsetY/X``, ``MIC:StageY/X`` and the drift displacement.
    stage_z : float
        ``MIC:StageZ``.
    height : float
        Height of the (tilted) specimen plane at the scan centre.
    """

    scan_offset: tuple[float, float]
    stage: tuple[float, float]
    drift: tuple[float, float]
    stage_z: float
    height: float

    @property
    def centre(self) -> tuple[float, float]:
        """Specimen coordinates (y, x) of the scan centre (the twin's scan offset)."""
        return tuple(
            o - s - d for o, s, d in zip(self.scan_offset, self.stage, self.drift, strict=True)
        )

    @property
    def dz(self) -> float:
        """Height of the specimen under the scan centre: StageZ + the tilt's height."""
        return self.stage_z + self.height


def place(readback: Readback, hidden: HiddenState, elapsed: float) -> Placement:
    """The specimen's placement for an acquisition read back as ``readback``,
    ``elapsed`` s after the IOC started (drift), under ``hidden``."""
    stage, offset = readback.stage, readback.scan["offset"]
    drift = hidden.drift_at(elapsed)
    centre_x = offset[1] - stage["x"] - drift[1]
    return Placement(
        scan_offset=(offset[0], offset[1]),
        stage=(stage["y"], stage["x"]),
        drift=drift,
        stage_z=stage["z"],
        height=hidden.height(centre_x),
    )


class TruthFile:
    """The private record of the true state (``--truth FILE``): JSON, replaced
    atomically (a temporary file renamed over it) each time it changes.

    Parameters
    ----------
    path : str
        The file.
    hidden : HiddenState
        What it records before any acquisition.
    specimen : mapping, optional
        ``{"name", "parameters", "hidden": [keys], ...}`` when specimen parameters were
        given (``--specimen-param``): recorded as ``specimen`` (the only place a hidden
        thickness is written).
    """

    FORMAT = "bluestem-ioc-truth"

    def __init__(self, path: str, hidden: HiddenState,
                 specimen: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        self.path = os.path.abspath(path)
        self._doc: dict[str, Any] = {
            "format": self.FORMAT,
            "version": 1,
            "units": "SI (m, rad, s); *_deg in degrees",
            "hidden_state": int(hidden.active or bool(specimen and specimen.get("hidden"))),
            "hidden": hidden.to_json(),
            "acquisitions": {},
            "files": {},
        }
        if specimen:
            self._doc["specimen"] = dict(specimen)

    def record(self, number: int, entry: Mapping[str, Any]) -> None:
        """Acquisition ``number`` started: add ``entry`` (and its file) and rewrite."""
        self._doc["acquisitions"][str(number)] = dict(entry)
        if entry.get("file"):
            self._doc["files"][entry["file"]] = number
        self.write()

    def write(self) -> None:
        """Write the file atomically (raises OSError when it cannot be written)."""
        folder = os.path.dirname(self.path)
        fd, tmp = tempfile.mkstemp(prefix=".truth-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(self._doc, out, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
