"""bluestem.devices — ophyd devices of a 4D-STEM instrument (see docs/devices.md).

Classic ophyd devices; the control layer (``ophyd.set_cl("caproto")``) is chosen by the
caller, never here. Every device takes ``prefix`` and ``name``.
"""

from .areadetector import DetectorCam, HDF5Writer, dtype_of_depth
from .detector import AcquisitionError, PixelatedDetector
from .microscope import Microscope
from .put_errors import CheckedSignal, PutRefused, install_put_error_handling, put_checked
from .scan_generator import ScanGenerator
from .stream import RowBatcher
from .verified import ReadbackMismatch, VerifiedEnum, VerifiedSetting, readback_matches

__all__ = [
    "AcquisitionError",
    "CheckedSignal",
    "DetectorCam",
    "HDF5Writer",
    "Microscope",
    "PixelatedDetector",
    "PutRefused",
    "ReadbackMismatch",
    "RowBatcher",
    "ScanGenerator",
    "VerifiedEnum",
    "VerifiedSetting",
    "dtype_of_depth",
    "install_put_error_handling",
    "put_checked",
    "readback_matches",
]
