"""bluestem.plans — bluesky plans for 4D-STEM (see docs/plans.md)."""

from .baseline import baseline
from .metadata import calibration, instrument_state
from .monitor import CounterMonitor
from .raster import FileStem, beam_positions, configured_run, raster, step_raster
from .series import dark_reference, series
from .validation import check_dwell, check_number, check_pair, check_shape

__all__ = [
    "CounterMonitor",
    "FileStem",
    "baseline",
    "beam_positions",
    "calibration",
    "check_dwell",
    "check_number",
    "check_pair",
    "check_shape",
    "configured_run",
    "dark_reference",
    "instrument_state",
    "raster",
    "series",
    "step_raster",
]
