"""bluestem.devices — ophyd devices of a 4D-STEM instrument (see docs/devices.md).

Classic ophyd devices; the control layer (``ophyd.set_cl("caproto")``) is chosen by the
caller, never here. Every device takes ``prefix`` and ``name``.
"""

from bluestem.instrument import dtype_of_depth  # kept here for compatibility

from .areadetector import DetectorCam, HDF5Writer
from .detector import AcquisitionError, PixelatedDetector
from .liveness import Liveness, Watchdog
from .microscope import Microscope
from .paths import PathInfo, PathProvider, UUIDPathProvider
from .put_errors import CheckedSignal, PutRefused, install_put_error_handling, put_checked
from .scan_generator import ScanGenerator
from .stream import RowBatcher
from .verified import (
    ReadbackMismatch,
    VerifiedEnum,
    VerifiedSetting,
    VerifiedText,
    readback_matches,
)

__all__ = [
    "AcquisitionError",
    "CheckedSignal",
    "DetectorCam",
    "HDF5Writer",
    "Liveness",
    "Microscope",
    "PathInfo",
    "PathProvider",
    "PixelatedDetector",
    "PutRefused",
    "ReadbackMismatch",
    "RowBatcher",
    "ScanGenerator",
    "UUIDPathProvider",
    "VerifiedEnum",
    "VerifiedSetting",
    "VerifiedText",
    "Watchdog",
    "dtype_of_depth",
    "install_put_error_handling",
    "put_checked",
    "readback_matches",
]
