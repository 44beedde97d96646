"""Series over a microscope setting, and dark references."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import MsgGenerator

from bluestem.instrument import BeamBlank

from .metadata import instrument_state, plain
from .raster import FileStem, _geometry_args, configured_run, raster
from .validation import MAX_EXPOSURE, check_dwell, check_number

__all__ = ["dark_reference", "series"]


def _setting_of(microscope, setting: str):
    allowed = getattr(microscope, "SETTINGS", ())
    if setting not in allowed:
        raise ValueError(f"setting={setting!r}: allowed {list(allowed)}")
    return getattr(microscope, setting)


def series(
    detector,
    scan,
    microscope,
    *,
    setting: str,
    values: Sequence[Any],
    shape: Sequence[int] | None = None,
    dwell: float,
    md: dict | None = None,
    **raster_kwargs,
) -> MsgGenerator[list[str]]:
    """A 4D raster (``shape`` given) or one frame (``shape=None``) at each value of a
    microscope setting, e.g. ``setting="defocus"`` for a focal series.

    With ``shape``: one run per value (each a complete :func:`raster` whose start document
    records that value as read back, plus ``series = {uid, setting, values, index}`` to
    group them). Without: one run, stream ``primary`` with one event per value (the
    setting's readback and the frame). Returns the run uids.
    """
    device = _setting_of(microscope, setting)
    if (
        isinstance(values, str)
        or not isinstance(values, Sequence)
        or not 1 <= len(values) <= 10000
    ):
        raise ValueError(f"values={values!r}: allowed a sequence of 1..10000 values")
    dwell = check_dwell(dwell)
    group = str(uuid.uuid4())
    info = {"uid": group, "setting": setting, "values": plain(list(values))}
    if shape is not None:
        # Validate the rasters before the first value moves anything.
        _geometry_args(
            shape, dwell, raster_kwargs.get("fov"), raster_kwargs.get("step"),
            raster_kwargs.get("rotation", 0.0), raster_kwargs.get("flyback", 0.0),
        )  # fmt: skip
        uids = []
        for index, value in enumerate(values):
            run_md = {**(md or {}), "series": {**info, "index": index}}
            uid = yield from raster(
                detector, scan, shape=shape, dwell=dwell, microscope=microscope,
                settings=[(device, value)], md=run_md, **raster_kwargs,
            )  # fmt: skip
            uids.append(uid)
        return uids

    stem = FileStem(detector)
    meta = {
        "plan_name": "series",
        "plan_args": {"setting": setting, "values": plain(list(values)), "dwell": dwell},
        "detectors": [detector.name],
        "series": info,
        **(md or {}),
    }

    def configure():
        yield from stem.prepare({"mode": "step", "acquire_time": dwell})

    def body():
        for value in values:
            yield from bps.checkpoint()  # a pause re-does the value it interrupted
            yield from bps.mv(device, value)
            yield from bps.trigger_and_read([detector, device])

    def state():
        return {**instrument_state(detector, scan, microscope), **stem.record()}

    uid = yield from bpp.finalize_wrapper(
        configured_run(configure, state, meta, body), bps.stop(detector)
    )
    return [uid]


def dark_reference(
    detector,
    microscope,
    *,
    num_frames: int,
    acquire_time: float,
    scan=None,
    md: dict | None = None,
) -> MsgGenerator[str]:
    """``num_frames`` frames of ``acquire_time`` s with the beam blanked; the beam is
    unblanked afterwards whatever happens (also on failure or abort).

    One run, stream ``primary``, one event per frame (``{det}_image`` (ky, kx)). The
    files are named by the detector's path provider, asked for ``{det}-dark``
    (``det-dark-{uuid}`` by default): a dark reference says so in its name.
    """
    n = int(check_number("num_frames", num_frames, low=1, high=100000))
    if n != num_frames:
        raise ValueError(f"num_frames={num_frames!r}: allowed an integer 1..100000")
    t = check_number("acquire_time", acquire_time, low=0.0, high=MAX_EXPOSURE, low_open=True)
    stem = FileStem(detector, label="dark")
    meta = {
        "plan_name": "dark_reference",
        "plan_args": {"num_frames": n, "acquire_time": t},
        "detectors": [detector.name],
        **(md or {}),
    }

    def configure():
        yield from bps.mv(microscope.beam_blank, BeamBlank.ON)
        yield from stem.prepare({"mode": "step", "acquire_time": t})

    def body():
        for _ in range(n):
            yield from bps.checkpoint()  # a pause re-takes the frame it interrupted
            yield from bps.trigger_and_read([detector])

    def state():
        out = {"microscope": plain({k[len(microscope.name) + 1 :]: r["value"]
                                    for k, r in microscope.read().items()})}  # fmt: skip
        if scan is not None:
            out = instrument_state(detector, scan, microscope)
        return {**out, **stem.record()}

    def unblank():
        yield from bps.mv(microscope.beam_blank, BeamBlank.OFF)

    return (
        yield from bpp.finalize_wrapper(configured_run(configure, state, meta, body), unblank())
    )
