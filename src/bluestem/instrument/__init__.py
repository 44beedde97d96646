"""bluestem.instrument — the words every layer uses for the instrument.

One place for the facts that cross the process boundary: the states the IOC publishes and
the devices read (:mod:`.states`), the detector's counter depths, data types and angular
calibration (:mod:`.detector`), and the scan generator's limits (:mod:`.limits`). The IOC
(``bluestem.ioc``), the ophyd devices (``bluestem.devices``) and the plans
(``bluestem.plans``) all import these, so a state name or a limit is written once.

This package depends on numpy only: the IOC process, a session and an analysis notebook
can all import it cheaply.
"""

from bluestem.instrument.detector import (
    COUNTER_DEPTHS,
    DATA_TYPES,
    PIXEL_SIZE,
    angle_per_pixel,
    data_type_of_depth,
    dtype_of_data_type,
    dtype_of_depth,
)
from bluestem.instrument.limits import (
    DWELL_MAX,
    EXPOSURE_MAX,
    SCAN_SHAPE_MAX,
)
from bluestem.instrument.states import (
    AutoIncrement,
    BeamBlank,
    Compression,
    DetectorState,
    Health,
    ImageMode,
    ScanMode,
    ScanState,
    TriggerMode,
    WriteStatus,
    names,
)

__all__ = [
    "COUNTER_DEPTHS",
    "DATA_TYPES",
    "DWELL_MAX",
    "EXPOSURE_MAX",
    "PIXEL_SIZE",
    "SCAN_SHAPE_MAX",
    "AutoIncrement",
    "BeamBlank",
    "Compression",
    "DetectorState",
    "Health",
    "ImageMode",
    "ScanMode",
    "ScanState",
    "TriggerMode",
    "WriteStatus",
    "angle_per_pixel",
    "data_type_of_depth",
    "dtype_of_data_type",
    "dtype_of_depth",
    "names",
]
