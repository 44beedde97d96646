"""Frames from the physics twin: the :class:`TwinSource` of ``bluestem ioc sim``."""

from __future__ import annotations

import json

from .backend import TwinReuse, build_render, twin_parameters
from .source import FrameRecipe, Readback

__all__ = ["TwinSource"]


class TwinSource:
    """A :class:`~bluestem.ioc.source.FrameSource` rendering with :mod:`bluestem.twin`.

    Each acquisition gets the twin of the instrument as read back, its own noise seed
    (``seed + number``) and the detector faults of ``faults``; a twin whose optics,
    detector and specimen did not change is reused with its frame cache
    (:class:`~bluestem.ioc.backend.TwinReuse`). The file records the twin's exact
    parameters (``/metadata/simulation``), from which
    :func:`~bluestem.ioc.backend.twin_from_parameters` rebuilds it.

    Parameters
    ----------
    specimen : str
        A name of :data:`bluestem.twin.SPECIMENS`.
    seed : int
        Noise seed of the first acquisition.
    faults : str
        :meth:`bluestem.twin.FaultSchedule.parse` syntax, e.g. ``"drop=5,17;late=40:0.2"``.
    max_rate : bool
        Recorded in the file: the instrument produced frames without pacing.
    """

    def __init__(
        self, specimen: str = "srtio3", *, seed: int = 0, faults: str = "", max_rate: bool = False
    ) -> None:
        self.specimen = specimen
        self.seed = int(seed)
        self.faults = faults
        self.max_rate = bool(max_rate)
        self._twins = TwinReuse()

    def parameters(self, readback: Readback, *, number: int) -> dict:
        """The twin's parameters for acquisition ``number``
        (:func:`~bluestem.ioc.backend.twin_parameters`)."""
        return twin_parameters(
            optics=readback.optics,
            detector=readback.detector,
            scan=readback.scan,
            specimen=self.specimen,
            dose_per_frame=readback.dose_per_frame,
            seed=self.seed + number,
            faults=self.faults,
        )

    def recipe(self, readback: Readback, *, number: int) -> FrameRecipe:
        """Frames of the twin built from ``readback`` (see
        :meth:`bluestem.ioc.source.FrameSource.recipe`)."""
        params = self.parameters(readback, number=number)
        dropped, late = frozenset(), {}
        if params["faults"]:
            # bluestem.twin (numba) is imported by the engine's thread, not on the loop:
            # only a faulty detector needs it here (and the CLI imported it already).
            from bluestem.twin import FaultSchedule

            faults = FaultSchedule.parse(params["faults"])
            dropped, late = faults.dropped, dict(faults.late)
        twins, position = self._twins, readback.beam_position

        def prepare():
            return build_render(twins.twin_for(params), position=position)

        simulation = {
            "specimen": params["specimen"],
            "seed": params["seed"],
            "dose_per_frame": params["dose_per_frame"],
            "faults": params["faults"],
            "max_rate": int(self.max_rate),
            "twin_parameters": json.dumps(params, sort_keys=True),
        }
        return FrameRecipe(
            prepare=prepare,
            dropped=dropped,
            late=late,
            parameters=params,
            metadata={"simulation": simulation},
        )
