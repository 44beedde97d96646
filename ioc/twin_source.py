"""Frames from the physics twin: the :class:`TwinSource` of ``bluestem ioc sim``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

from .backend import TwinReuse, build_render, specimen_truth, twin_parameters
from .hidden import (
    LOG,
    Column,
    HiddenState,
    Placement,
    TruthFile,
    effective_optics,
    place,
    split_specimen,
)
from .source import FrameRecipe, Readback

__all__ = ["TwinSource"]


class TwinSource:
    """A :class:`~bluestem.ioc.source.FrameSource` rendering with :mod:`bluestem.twin`.

    Each acquisition gets the twin of the instrument as read back, its own noise seed
    (``seed + number``) and the detector faults of ``faults``; a twin whose optics,
    detector and specimen did not change is reused with its frame cache
    (:class:`~bluestem.ioc.backend.TwinReuse`). The stage and the scan offset place the
    specimen under the beam (the twin's ``ScanGeometry.offset``), StageZ lowers the
    defocus (:mod:`bluestem.ioc.hidden`).

    The file records the twin's parameters as the PVs describe it (``/metadata/simulation``
    ``twin_parameters``, from which :func:`~bluestem.ioc.backend.twin_from_parameters`
    rebuilds it) and ``hidden_state`` (0 or 1). Without hidden state that twin is exactly
    the one that rendered the frames; with it, the frames come from the true twin —
    residual aberrations, specimen tilt and drift added — which only the IOC's log and
    the truth file (``truth``) know.

    Specimen parameters (``--specimen-param``) are recorded in ``twin_parameters``
    (``specimen = {"name", "parameters"}``) except the hidden ones (the thickness,
    :data:`~bluestem.ioc.hidden.HIDDEN_SPECIMEN_PARAMETERS`): the file then records
    ``hidden_specimen_parameters`` (their names, e.g. ``"thickness"``) and
    ``hidden_state = 1``, and the truth file holds their values. Without specimen
    parameters the file is exactly what it was.

    Parameters
    ----------
    specimen : str
        A name of :data:`bluestem.twin.SPECIMENS`.
    specimen_parameters : mapping, optional
        Its parameters (:func:`~bluestem.ioc.backend.parse_specimen_parameters`).
    seed : int
        Noise seed of the first acquisition.
    faults : str
        :meth:`bluestem.twin.FaultSchedule.parse` syntax, e.g. ``"drop=5,17;late=40:0.2"``.
    max_rate : bool
        Recorded in the file: the instrument produced frames without pacing.
    hidden : HiddenState, optional
        What no PV shows (default: nothing).
    truth : str
        Path of the truth file, rewritten at each acquisition's start ("" for none).
    clock : callable
        Seconds, monotonic: the drift runs from this source's creation.
    """

    def __init__(
        self,
        specimen: str = "srtio3",
        *,
        specimen_parameters: dict | None = None,
        seed: int = 0,
        faults: str = "",
        max_rate: bool = False,
        hidden: HiddenState | None = None,
        truth: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.specimen = specimen
        self.specimen_parameters = dict(specimen_parameters or {})
        described, hidden_params = split_specimen(self.specimen_parameters)
        self._described = {"name": specimen, "parameters": described}
        self._true = {"name": specimen, "parameters": self.specimen_parameters}
        self.hidden_specimen = sorted(hidden_params)
        self.seed = int(seed)
        self.faults = faults
        self.max_rate = bool(max_rate)
        self.hidden = hidden or HiddenState()
        self._clock = clock
        self._start = clock()
        truth_specimen = (specimen_truth(specimen, self.specimen_parameters)
                          if self.specimen_parameters else None)  # fmt: skip
        self._truth = TruthFile(truth, self.hidden, truth_specimen) if truth else None
        self._twins = TwinReuse()

    def write_truth(self) -> None:
        """Write the truth file now (nothing without one; OSError when it cannot be)."""
        if self._truth is not None:
            self._truth.write()

    @property
    def hides(self) -> bool:
        """True when the twin that renders differs from the one the file describes."""
        return self.hidden.active or bool(self.hidden_specimen)

    def _twin(self, readback: Readback, number: int, placement: Placement, column: Column,
              *, true: bool = False):  # fmt: skip
        optics = effective_optics(readback.optics, column, placement.dz)
        return twin_parameters(
            optics=optics,
            detector=readback.detector,
            scan={**readback.scan, "offset": placement.centre},
            specimen=self._true if true else self._described,
            dose_per_frame=readback.dose_per_frame,
            seed=self.seed + number,
            faults=self.faults,
        )

    def parameters(self, readback: Readback, *, number: int) -> dict:
        """The twin's parameters for acquisition ``number`` as the PVs describe it
        (:func:`~bluestem.ioc.backend.twin_parameters`; what the file records)."""
        described = place(readback, HiddenState(), 0.0)
        return self._twin(readback, number, described, Column())

    def true_parameters(self, readback: Readback, *, number: int, elapsed: float):
        """``(parameters, placement)`` of the twin that really renders acquisition
        ``number``, ``elapsed`` s after this source was made."""
        placement = place(readback, self.hidden, elapsed)
        params = self._twin(readback, number, placement, self.hidden.column, true=True)
        return params, placement

    def recipe(self, readback: Readback, *, number: int) -> FrameRecipe:
        """Frames of the twin built from ``readback`` (see
        :meth:`bluestem.ioc.source.FrameSource.recipe`)."""
        params = self.parameters(readback, number=number)
        elapsed = self._clock() - self._start
        true, placement = params, None
        if self.hides or self._truth is not None:
            true, placement = self.true_parameters(readback, number=number, elapsed=elapsed)
        dropped, late = frozenset(), {}
        if params["faults"]:
            # bluestem.twin (numba) is imported by the engine's thread, not on the loop:
            # only a faulty detector needs it here (and the CLI imported it already).
            from bluestem.twin import FaultSchedule

            faults = FaultSchedule.parse(params["faults"])
            dropped, late = faults.dropped, dict(faults.late)
        twins, position = self._twins, readback.beam_position

        def prepare():
            return build_render(twins.twin_for(true), position=position)

        def started(file: str) -> None:
            if placement is not None:
                self._record(number, file, elapsed, readback, placement, true)

        simulation = {
            "specimen": self.specimen,
            "seed": params["seed"],
            "dose_per_frame": params["dose_per_frame"],
            "faults": params["faults"],
            "max_rate": int(self.max_rate),
            "hidden_state": int(self.hides),
            "twin_parameters": json.dumps(params, sort_keys=True),
        }
        if self.hidden_specimen:
            simulation["hidden_specimen_parameters"] = ",".join(self.hidden_specimen)
        return FrameRecipe(
            prepare=prepare,
            dropped=dropped,
            late=late,
            parameters=params,
            metadata={"simulation": simulation},
            started=started,
        )

    def _record(self, number, file, elapsed, readback, placement, true) -> None:
        """Acquisition ``number`` started: the truth to the log and the truth file."""
        optics, column = true["optics"], self.hidden.column
        entry = {
            "number": number,
            "file": file,
            "elapsed": elapsed,
            "setpoint": dict(readback.optics),
            "effective": {
                "C1": optics["defocus"],
                "A1": optics["astigmatism"],
                "A1_angle": optics["astigmatism_angle"],
                "A1_angle_deg": math.degrees(optics["astigmatism_angle"]),
                "C3": optics["cs"],
            },
            "C1_terms": {
                "setpoint": readback.optics["defocus"],
                "residual": column.c1,
                "dz": placement.dz,
            },
            "dz": {
                "stage_z": placement.stage_z,
                "height": placement.height,
                "total": placement.dz,
            },
            "displacement": {
                "scan_offset": list(placement.scan_offset),
                "stage": list(placement.stage),
                "drift": list(placement.drift),
                "scan_centre": list(placement.centre),
            },
            "twin_parameters": true,
        }
        cy, cx = placement.centre
        LOG.info(
            "acquisition %d (%s): C1 %.3f nm (setpoint %.3f + residual %.3f - dz %.3f), "
            "A1 %.3f nm @ %.2f deg, C3 %.4f mm; scan centre on the specimen (y, x) "
            "(%.3f, %.3f) nm, drift (%.3f, %.3f) nm",
            number, file or "no file", optics["defocus"] * 1e9,
            readback.optics["defocus"] * 1e9, column.c1 * 1e9, placement.dz * 1e9,
            optics["astigmatism"] * 1e9, math.degrees(optics["astigmatism_angle"]),
            optics["cs"] * 1e3, cy * 1e9, cx * 1e9, placement.drift[0] * 1e9,
            placement.drift[1] * 1e9,
        )  # fmt: skip
        if self._truth is not None:
            try:
                self._truth.record(number, entry)
            except OSError as exc:
                LOG.error("truth file %s not written: %s", self._truth.path, exc)
