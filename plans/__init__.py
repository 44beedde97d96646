"""bluestem.plans — bluesky plans for 4D-STEM (see docs/plans.md)."""

from .autofocus import autofocus
from .baseline import baseline
from .loop import LoopDiverged, closed_loop, run_documents
from .metadata import calibration, instrument_state
from .monitor import CounterMonitor
from .pacbed import pacbed_thickness
from .raster import FileStem, beam_positions, configured_run, raster, step_raster
from .series import dark_reference, series
from .survey import adaptive_survey
from .validation import check_dwell, check_number, check_pair, check_shape

__all__ = [
    "CounterMonitor",
    "FileStem",
    "LoopDiverged",
    "adaptive_survey",
    "autofocus",
    "baseline",
    "beam_positions",
    "calibration",
    "check_dwell",
    "check_number",
    "check_pair",
    "check_shape",
    "closed_loop",
    "configured_run",
    "dark_reference",
    "instrument_state",
    "pacbed_thickness",
    "raster",
    "run_documents",
    "series",
    "step_raster",
]
