"""The adaptive survey's agent: survey once, then for each of the best features track the
drift and centre a fine scan on the feature (docs/loop.md, "Adaptive survey").

The agent decides only the scan offset (``scan_offset_y``, ``scan_offset_x``, nm as the
PVs) and from the recorded measurements only, so a survey's decisions replay from the
catalogue (:func:`bluestem.loop.replay_decisions`). Each measurement carries its
``role``:

``survey``
    ``features`` (heaviest first, each ``{"y_nm", "x_nm", ...}``: the feature's
    displacement from the survey's scan centre in the specimen frame) and ``time`` (s,
    the survey run's start): the survey's offsets read back are the origin.
``track``
    ``drift_nm`` ``[y, x]`` (the specimen's drift since the survey, from a tracking image
    of the survey's field), ``reliable``, ``time`` and ``ready`` (when the analysis
    finished: the next scan starts about ``lag`` s later).
``fine``
    ``time`` (its start), ``ready`` and what the plan measured in the fine scan: ``found``
    and ``centring_nm`` ``[y, x]`` (the feature's displacement from the scan's centre).

The fine scan of a feature at **g** from the survey's centre **O** is set to
``O + g + d(t)``: ``d(t)`` is the drift extrapolated to the fine scan's expected start
(:func:`bluestem.loop.drift.extrapolate` over the survey, at zero drift, and the tracking
measurements); ``t = ready + lag`` with ``lag`` the last measured delay between a
tracking analysis and the next fine scan's start.

A fine scan whose own image shows the feature more than ``recentre_nm`` off its centre is
taken again, once, at ``offset + centring + d(t') - d(t_fine)`` (``recentres`` in all): the
survey's low-dose image locates a feature to a fraction of its pixel, the fine image to a
fraction of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bluestem.loop.agent import Agent
from bluestem.loop.drift import extrapolate

__all__ = ["OFFSET_X", "OFFSET_Y", "SurveyAgent"]

#: Loop setting names (the umbrella's columns): the scan offset, nm.
OFFSET_Y, OFFSET_X = "scan_offset_y", "scan_offset_x"
#: A drift measurement further than this (nm) from the line through the earlier ones is
#: not used: a periodic specimen once matched a wrong period (30 nm off in a CI run).
MAX_JUMP_NM = 5.0
#: The measurement roles, in the order of one feature's visit.
SURVEY, TRACK, FINE, DONE = "survey", "track", "fine", "done"


class SurveyAgent(Agent):
    """Survey, then ``features`` × (track, fine) — or × (fine) without tracking.

    Parameters
    ----------
    features : int
        Fine scans to take (the heaviest features first; fewer when the survey finds
        fewer).
    track : bool
        Measure the drift before each fine scan and correct the offset for it.
    lag : float
        First guess of the delay (s) between a tracking analysis and the next scan's
        start, until one is measured.
    window : int
        Drift measurements (the survey's zero included) in the straight-line fit.
    recentre_nm : float, optional
        A fine scan whose feature is further than this from its centre (nm) is taken
        again, re-centred on it (None: never).
    recentres : int
        Most re-centred fine scans in the whole survey.
    """

    def __init__(self, features: int = 3, track: bool = True, lag: float = 0.5,
                 window: int = 3, recentre_nm: float | None = None,
                 recentres: int = 0) -> None:  # fmt: skip
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"features={features!r}: allowed an integer >= 1")
        if not isinstance(track, bool):
            raise ValueError(f"track={track!r}: allowed True or False")
        if not (isinstance(lag, int | float) and math.isfinite(lag) and 0 <= lag <= 60):
            raise ValueError(f"lag={lag!r}: allowed 0..60 s")
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window={window!r}: allowed an integer >= 2")
        if recentre_nm is not None and not (isinstance(recentre_nm, int | float)
                                            and 0 < recentre_nm < 1e4):  # fmt: skip
            raise ValueError(f"recentre_nm={recentre_nm!r}: allowed None or 0 < value < 1e4")
        if isinstance(recentres, bool) or not isinstance(recentres, int) or recentres < 0:
            raise ValueError(f"recentres={recentres!r}: allowed an integer >= 0")
        self.recentre_nm = None if recentre_nm is None else float(recentre_nm)
        self.recentres, self.recentred = recentres, 0
        self.again: dict[str, float] | None = None  # the re-centred offset, when one is due
        self.scans: list[str] = []  # each measurement's role ("fine again": re-centred)
        self.features, self.track = features, track
        self.lag0 = self.lag = float(lag)  # lag: the last measured one
        self.window = window
        self.phase = SURVEY
        self.origin: tuple[float, float] | None = None
        self.targets: list[dict[str, Any]] = []
        self.found = 0
        self.times: list[float] = []
        self.drifts: list[tuple[float, float]] = []
        self.ready: float | None = None
        self.visited: list[dict[str, Any]] = []
        self.planned: dict[str, float] | None = None

    def parameters(self) -> dict:
        return {"features": self.features, "track": self.track, "lag": self.lag0,
                "window": self.window, "recentre_nm": self.recentre_nm,
                "recentres": self.recentres}  # fmt: skip

    @property
    def target(self) -> dict[str, Any] | None:
        """The feature the next fine scan is for (None outside the fine phase)."""
        if self.phase in (TRACK, FINE) and len(self.visited) < len(self.targets):
            return self.targets[len(self.visited)]
        return None

    def _drift_at(self, t: float) -> tuple[float, float]:
        if not (self.track and self.ready is not None):
            return (0.0, 0.0)
        return extrapolate(self.times, self.drifts, t, window=self.window)

    def _fine_offset(self) -> dict[str, float]:
        assert self.origin is not None
        if self.again is not None:
            return dict(self.again)
        target = self.targets[len(self.visited)]
        drift = self._drift_at(self.ready + self.lag) if self.ready is not None else (0.0, 0.0)
        y = self.origin[0] + float(target["y_nm"]) + drift[0]
        x = self.origin[1] + float(target["x_nm"]) + drift[1]
        self.planned = {"drift_nm": [drift[0], drift[1]], "for_time": (
            None if self.ready is None else self.ready + self.lag)}  # fmt: skip
        return {OFFSET_Y: round(y, 3), OFFSET_X: round(x, 3)}

    def suggest(self, n: int = 1) -> list[dict[str, float]]:
        if self.phase == TRACK:
            assert self.origin is not None
            point = {OFFSET_Y: self.origin[0], OFFSET_X: self.origin[1]}
        elif self.phase == FINE:
            point = self._fine_offset()
        else:  # the survey at the offsets as they are; nothing after the last
            point = {}
        return [dict(point) for _ in range(max(1, n))]

    def ingest(self, point: Mapping[str, Any], measurement: Mapping[str, Any]) -> None:
        role = measurement.get("role")
        if role != self.phase:
            raise ValueError(f"measurement role {role!r}: the agent expected {self.phase!r}")
        if role == SURVEY:
            self.origin = (float(point[OFFSET_Y]), float(point[OFFSET_X]))
            found = list(measurement.get("features") or [])
            self.found = len(found)
            self.targets = found[: self.features]
            self.times, self.drifts = [float(measurement["time"])], [(0.0, 0.0)]
        elif role == TRACK:
            dy, dx = (float(v) for v in measurement["drift_nm"])
            t = float(measurement["time"])
            if measurement.get("reliable", True) and self._consistent(t, dy, dx):
                self.times.append(t)
                self.drifts.append((dy, dx))
            self.ready = float(measurement["ready"])
        again = role == FINE and self.again is not None
        self.scans.append(f"{role} again" if again else role)
        if role == FINE:
            if self.ready is not None and self.track and not again:
                self.lag = max(0.0, float(measurement["time"]) - self.ready)
            self.again = None
            offset = (float(point[OFFSET_Y]), float(point[OFFSET_X]))
            if self._recentre(offset, measurement, again):
                return
            self.visited.append({"target": dict(self.targets[len(self.visited)]),
                                 "offset": list(offset), "recentred": again,
                                 **(self.planned or {})})  # fmt: skip
        if role == TRACK:
            self.phase = FINE
        elif len(self.visited) >= len(self.targets):  # none found, or the last visited
            self.phase = DONE
        else:
            self.phase = TRACK if self.track else FINE

    def _consistent(self, t: float, dy: float, dx: float) -> bool:
        """A drift measurement agrees with the line through the earlier ones (within
        ``MAX_JUMP_NM``); a periodic specimen can match a wrong period."""
        if len(self.times) < 2:  # only the survey's zero: nothing to compare with
            return True
        py, px = extrapolate(self.times, self.drifts, t, window=self.window)
        return math.hypot(dy - py, dx - px) <= MAX_JUMP_NM

    def _recentre(self, offset, measurement, again: bool) -> bool:
        """Plan the fine scan again on the feature, when it was found too far off."""
        error = measurement.get("centring_error_nm")
        if (again or self.recentre_nm is None or self.recentred >= self.recentres
                or not measurement.get("found") or error is None
                or float(error) <= self.recentre_nm):  # fmt: skip
            return False
        cy, cx = (float(v) for v in measurement["centring_nm"])
        t_fine = float(measurement["time"])
        then = self._drift_at(t_fine)
        t_next = float(measurement.get("ready", t_fine)) + self.lag
        now = self._drift_at(t_next)
        self.recentred += 1
        self.again = {OFFSET_Y: round(offset[0] + cy + now[0] - then[0], 3),
                      OFFSET_X: round(offset[1] + cx + now[1] - then[1], 3)}  # fmt: skip
        self.planned = {"drift_nm": [now[0] - then[0], now[1] - then[1]], "for_time": t_next,
                        "recentre_from_nm": [cy, cx]}  # fmt: skip
        return True

    def report(self) -> dict:
        done = self.phase == DONE
        last = self.drifts[-1] if self.drifts else (0.0, 0.0)
        nxt = self.target
        decision = (
            "survey" if self.origin is None
            else "no features found" if not self.targets
            else "every target visited" if done
            else f"track the drift before feature {len(self.visited) + 1}"
            if self.phase == TRACK
            else f"fine scan of feature {len(self.visited) + 1} again, re-centred on it"
            if self.again is not None
            else f"fine scan of feature {len(self.visited) + 1} of {len(self.targets)}"
        )  # fmt: skip
        return {
            "done": done,
            "next": self.phase,
            "features_found": self.found,
            "targets": len(self.targets),
            "visited": len(self.visited),
            "drift_nm": [last[0], last[1]],
            "lag_s": self.lag,
            "recentred": self.recentred,
            "scans": list(self.scans),
            "next_target": nxt,
            "decision": decision,
        }
