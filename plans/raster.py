"""4D rasters: a fly scan (one frame per position, triggered by the scan generator) and a
step scan (one trigger per beam position, for slow detectors)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import FailedStatus, MsgGenerator, RequestAbort, RequestStop

# The submodule, not the package: importing the plans must not load the numba kernels.
from bluestem.instrument import ScanMode
from bluestem.reduce.from_run import check_reductions, resolve_reductions

from .fly import collect_until_complete, end_acquisition, rewindable, wait_status
from .metadata import instrument_state, plain
from .monitor import CounterMonitor
from .validation import check_dwell, check_number, check_pair, check_shape

__all__ = [
    "FileStem",
    "beam_positions",
    "configured_run",
    "failure_reason",
    "raster",
    "step_raster",
]

# s between StreamDatum flushes during a fly scan: live images follow at about 10 Hz
# (each flush is one CA read of the writer counters and, at most, one document).
FLUSH_PERIOD = 0.1


def _geometry_args(shape, dwell, fov, step, rotation, flyback) -> dict:
    """Validated scan arguments (nothing touched yet)."""
    ny, nx = check_shape(shape)
    if fov is not None and step is not None:
        raise ValueError(f"fov={fov!r} and step={step!r}: allowed one of them, not both")
    return {
        "shape": (ny, nx),
        "dwell": check_dwell(dwell),
        "fov": check_pair("fov", fov, low=0.0, high=1e7),
        "step": check_pair("step", step, low=0.0, high=1e7),
        "rotation": check_number("rotation", rotation, low=-360.0, high=360.0),
        "flyback": check_number("flyback", flyback, low=0.0, high=1.0),
    }


def _configure_scan(scan, g: dict, mode: ScanMode) -> MsgGenerator[None]:
    """Verified settings, shape first (a shape keeps the step; a fov sets the step)."""
    ny, nx = g["shape"]
    yield from bps.mv(scan.shape_y, ny)
    yield from bps.mv(scan.shape_x, nx)
    if g["fov"] is not None:
        yield from bps.mv(scan.fov_y, g["fov"][0])
        yield from bps.mv(scan.fov_x, g["fov"][1])
    if g["step"] is not None:
        yield from bps.mv(scan.step_y, g["step"][0])
        yield from bps.mv(scan.step_x, g["step"][1])
    yield from bps.mv(scan.dwell, g["dwell"])
    yield from bps.mv(scan.rotation, g["rotation"])
    yield from bps.mv(scan.flyback, g["flyback"])
    yield from bps.mv(scan.mode, mode)


def failure_reason(exc: BaseException) -> str:
    """The error a failed status wraps (e.g. a ReadbackMismatch naming the setting)."""
    cause = exc.__cause__ if isinstance(exc, FailedStatus) and exc.__cause__ else exc
    return f"{type(cause).__name__}: {cause}"


def configured_run(
    configure: Callable[[], MsgGenerator[Any]],
    state: Callable[[], dict],
    md: dict,
    body: Callable[[], MsgGenerator[Any]],
    interrupted: Callable[[], MsgGenerator[Any]] | None = None,
) -> MsgGenerator[str]:
    """Configure, read the instrument back, open the run with that state, run ``body``.

    A failure is always recorded as a failed run whose ``reason`` names the error (for a
    read-back mismatch: setting, request and readback; for a lost IOC: the device that
    lost it). A configuration that fails (a refused write, a readback that does not
    follow) still opens a run, with the state as read back then, and closes it with
    ``exit_status="fail"``. The error is re-raised.

    ``interrupted`` runs, while the run is still open, when ``body`` ends early (abort,
    stop or failure): e.g. :func:`~bluestem.plans.fly.end_acquisition`, so that the run
    announces exactly what the file holds.
    """
    try:
        yield from configure()
    except Exception as exc:
        try:
            snapshot = state()
        except Exception as read_exc:  # the record must not hide the first error
            snapshot = {"state_error": str(read_exc)}
        reason = failure_reason(exc)
        yield from bps.open_run({**md, **plain(snapshot), "configuration_error": reason})
        yield from bps.close_run(exit_status="fail", reason=f"configuration failed: {reason}")
        raise
    uid = yield from bps.open_run({**md, **plain(state())})
    try:
        yield from body()
    except (RequestAbort, RequestStop):
        if interrupted is not None:
            yield from interrupted()
        raise  # the RunEngine records these itself
    except Exception as exc:
        reason = failure_reason(exc)  # the first error, whatever the clean-up meets
        if interrupted is not None:
            yield from interrupted()
        yield from bps.close_run(exit_status="fail", reason=reason)
        raise
    yield from bps.close_run()
    return uid


def _cleanup(detector, scan) -> MsgGenerator[None]:
    """Always: end a scan still running and disarm the detector (no-ops when done), and
    let the RunEngine replay messages on resume again (the fly section forbids it)."""
    yield from bps.stop(scan)
    yield from bps.stop(detector)
    yield from rewindable(True)


class FileStem:
    """The detector's ``prepare`` of one plan and the file name stem it chose.

    The detector names the run's files (its path provider, or ``file_stem`` when the
    plan was given one); the start document records the name as ``raw_file_stem``, once
    this plan has prepared the detector (never a name of an earlier run).

    Parameters
    ----------
    detector : bluestem.devices.PixelatedDetector
    file_stem : str, optional
        The plan's ``file_stem=`` argument (overrides the path provider's name).
    label : str, optional
        Asked of the path provider as ``{detector.name}-{label}`` (``"dark"``).
    """

    def __init__(self, detector, file_stem: str | None = None, label: str | None = None):
        if file_stem is not None and not isinstance(file_stem, str):
            raise ValueError(f"file_stem={file_stem!r}: allowed a file name stem or None")
        self.detector, self.file_stem, self.label = detector, file_stem or None, label
        self._asked = False

    def prepare(self, value: dict) -> MsgGenerator[None]:
        """``bps.prepare(detector, value + file_stem/label, wait=True)``."""
        extra = {"file_stem": self.file_stem} if self.file_stem else {}
        if self.label:
            extra["label"] = self.label
        self._asked = True
        yield from bps.prepare(self.detector, {**value, **extra}, wait=True)

    def record(self) -> dict:
        """``{"raw_file_stem": stem}`` once prepared (``{}`` before)."""
        stem = getattr(self.detector, "file_stem", "") if self._asked else ""
        return {"raw_file_stem": stem} if stem else {}


def _plan_md(plan_name: str, args: dict, detector, scan, microscope, md) -> dict:
    return {
        "plan_name": plan_name,
        "plan_args": plain({k: v for k, v in args.items() if v is not None}),
        "detectors": [detector.name],
        "motors": [scan.name],
        **({"microscope_name": microscope.name} if microscope is not None else {}),
        **(md or {}),
    }


def raster(
    detector,
    scan,
    *,
    shape: Sequence[int],
    dwell: float,
    fov: float | Sequence[float] | None = None,
    step: float | Sequence[float] | None = None,
    rotation: float = 0.0,
    flyback: float = 0.0,
    microscope=None,
    file_stem: str | None = None,
    settings: Sequence[tuple[Any, Any]] = (),
    reductions: Any = None,
    md: dict | None = None,
) -> MsgGenerator[str]:
    """Fly raster: one frame per scan position into one HDF5 file, a 4D stream.

    Parameters
    ----------
    detector : bluestem.devices.PixelatedDetector
    scan : bluestem.devices.ScanGenerator
    shape : (ny, nx)
        Scan positions, integers 1..4096.
    dwell : float
        s per position, 0 < dwell <= 1.
    fov, step : float or (y, x), optional
        Field of view or step in nm (one of them; neither keeps the current step).
    rotation : float
        Scan rotation in deg, -360..360.
    flyback : float
        s of settling per row, 0..1.
    microscope : bluestem.devices.Microscope, optional
        Read back into the start document (and used for the angular calibration).
    file_stem : str, optional
        File name stem; default the detector's path provider's (``{detector.name}-{uuid}``
        for the default provider: run-scoped, never reused).
    settings : sequence of (device, value)
        Extra verified settings applied with the scan configuration (used by ``series``).
    reductions : None, False, ReductionSpec or mapping
        Live images of the run (see :func:`bluestem.reduce.check_reductions`):
        None gives bright field, annular dark field and centre of mass; False none. The
        resolved spec is recorded in the start document (``reduction``).
    md : dict, optional
        Extra start-document metadata (sample, operator...).

    Returns the run's uid. Stream ``primary``: ``{det}_image`` of shape (nx, ky, kx) per
    event, one event per scan row. Stream ``{det}_hdf_dropped_frames_monitor``: the
    detector's dropped-frame counter while it acquires (data key
    ``{det}_hdf_dropped_frames``; the final count is its last event).
    """
    g = _geometry_args(shape, dwell, fov, step, rotation, flyback)
    reduction = check_reductions(reductions)
    stem = FileStem(detector, file_stem)
    args = {**g, "microscope": getattr(microscope, "name", None), "file_stem": file_stem}
    meta = _plan_md("raster", args, detector, scan, microscope, md)
    ny, nx = g["shape"]
    _check_against_instrument(reduction, detector, scan, microscope)
    dropped = CounterMonitor(detector.hdf.dropped_frames)

    def configure():
        for device, value in settings:
            yield from bps.mv(device, value)
        yield from _configure_scan(scan, g, ScanMode.FLY)
        yield from stem.prepare({"mode": "fly", "shape": (ny, nx)})

    def body():
        # A pause holds the scan at a row boundary and resume goes on from there: nothing
        # of this section may be replayed (see bluestem.plans.fly).
        yield from rewindable(False)
        yield from bps.declare_stream(detector, name="primary", collect=True)
        yield from wait_status((yield from bps.kickoff(detector)))
        # The StreamResource now, before the first row: a live reduction can open the
        # file and follow it from the first frame.
        yield from bps.collect(detector, name="primary")
        # The file is open (its counters reset): the dropped frames, as a monitor stream.
        yield from dropped.start()
        yield from wait_status((yield from bps.abs_set(scan.start, 1)))
        yield from collect_until_complete(detector, stream="primary", flush_period=FLUSH_PERIOD)
        yield from dropped.finish()

    def state():
        return _with_reduction(instrument_state(detector, scan, microscope), reduction, stem)

    def interrupted():
        yield from end_acquisition(detector, scan, stream="primary")
        yield from dropped.finish()  # after the file closed: its final count

    run = configured_run(configure, state, meta, body, interrupted)
    return (
        yield from bpp.finalize_wrapper(
            bpp.stage_wrapper(run, [scan, detector]), _cleanup(detector, scan)
        )
    )


def _check_against_instrument(reduction: Any, detector, scan, microscope) -> None:
    """Resolve ``reductions`` against the instrument as it is now, before anything moves:
    radii and masks are refused against the detector's frame shape (blocking reads)."""
    if reduction is not False:
        resolve_reductions(reduction, instrument_state(detector, scan, microscope))


def _with_reduction(state: dict, reduction: Any, stem: FileStem) -> dict:
    """The run's state plus its file name stem and resolved reduction spec."""
    spec = resolve_reductions(reduction, state)
    state = {**state, **stem.record()}
    if spec is not None:
        state["reduction"] = spec.to_dict()
    return state


def beam_positions(shape: tuple[int, int], step: Sequence[float]) -> list[tuple[float, float]]:
    """Row-major (y, x) beam positions in nm from the scan centre."""
    ny, nx = shape
    dy, dx = step
    return [
        ((iy - (ny - 1) / 2) * dy, (ix - (nx - 1) / 2) * dx)
        for iy in range(ny)
        for ix in range(nx)
    ]


def step_raster(
    detector,
    scan,
    *,
    shape: Sequence[int],
    dwell: float,
    fov: float | Sequence[float] | None = None,
    step: float | Sequence[float] | None = None,
    microscope=None,
    file_stem: str | None = None,
    reductions: Any = None,
    md: dict | None = None,
) -> MsgGenerator[str]:
    """Step raster: move the beam (``BeamY``/``BeamX``, verified), take one internally
    triggered frame of ``dwell`` s, for every position in row-major order.

    Arguments as :func:`raster` (rotation is not applied to beam positions: they are
    scan-frame coordinates). Stream ``primary``: one event per position with the beam
    readbacks and ``{det}_image`` (ky, kx); one file per frame.
    """
    g = _geometry_args(shape, dwell, fov, step, 0.0, 0.0)
    reduction = check_reductions(reductions)
    stem = FileStem(detector, file_stem)
    args = {**g, "microscope": getattr(microscope, "name", None), "file_stem": file_stem}
    meta = _plan_md("step_raster", args, detector, scan, microscope, md)
    _check_against_instrument(reduction, detector, scan, microscope)

    def configure():
        yield from _configure_scan(scan, g, ScanMode.STEP)
        yield from stem.prepare({"mode": "step", "acquire_time": g["dwell"]})

    def body():
        steps = [float(scan.step_y.get()), float(scan.step_x.get())]
        for y, x in beam_positions(g["shape"], steps):
            # A pause re-does the position it interrupted (its frame is taken again).
            yield from bps.checkpoint()
            yield from bps.mv(scan.beam_y, y, scan.beam_x, x)
            yield from bps.trigger_and_read([detector, scan.beam_y, scan.beam_x])

    def state():
        return _with_reduction(instrument_state(detector, scan, microscope), reduction, stem)

    run = configured_run(configure, state, meta, body)
    return (
        yield from bpp.finalize_wrapper(
            bpp.stage_wrapper(run, [scan, detector]), _cleanup(detector, scan)
        )
    )
