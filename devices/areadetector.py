"""The pixelated detector's ``cam1:`` and ``HDF1:`` sub-devices (areaDetector names)."""

from __future__ import annotations

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Kind

# dtype_of_depth is the core's (bluestem.instrument), re-exported here for compatibility.
from bluestem.instrument import dtype_of_data_type, dtype_of_depth

from .text import TextSignalRO
from .verified import VerifiedEnum, VerifiedSetting, VerifiedText

__all__ = ["DetectorCam", "HDF5Writer", "chunk_shape_of", "dtype_of_depth"]

_CONFIG = {"kind": Kind.config}


def chunk_shape_of(value) -> list[int]:
    """``HDF1:ChunkShape_RBV`` as a list of ints.

    The PV is an integer waveform of up to 4 elements; a chunk extent is at least 1, so
    zeros are padding and dropped. An empty shape (nothing written yet) is a
    ``ValueError``.
    """
    try:
        shape = [int(v) for v in np.atleast_1d(np.asarray(value)).ravel()]
    except (TypeError, ValueError):
        shape = []
    shape = [v for v in shape if v > 0]
    if not shape:
        raise ValueError(f"chunk shape {value!r}: allowed 1..4 positive integers")
    return shape


class DetectorCam(Device):
    """``PFX:DET:cam1:`` — acquisition settings and state."""

    acquire = Cpt(EpicsSignal, "Acquire", kind=Kind.omitted)
    acquire_rbv = Cpt(EpicsSignalRO, "Acquire_RBV", kind=Kind.omitted)
    acquire_time = Cpt(VerifiedSetting, "AcquireTime", rtol=1e-6, **_CONFIG)
    acquire_period = Cpt(VerifiedSetting, "AcquirePeriod", rtol=1e-6, **_CONFIG)
    num_images = Cpt(VerifiedSetting, "NumImages", **_CONFIG)
    image_mode = Cpt(VerifiedEnum, "ImageMode", **_CONFIG)
    trigger_mode = Cpt(VerifiedEnum, "TriggerMode", **_CONFIG)
    counter_depth = Cpt(VerifiedEnum, "CounterDepth", **_CONFIG)
    bin_x = Cpt(VerifiedSetting, "BinX", **_CONFIG)
    bin_y = Cpt(VerifiedSetting, "BinY", **_CONFIG)
    size_x = Cpt(VerifiedSetting, "SizeX", **_CONFIG)
    size_y = Cpt(VerifiedSetting, "SizeY", **_CONFIG)
    max_size_x = Cpt(EpicsSignalRO, "MaxSizeX_RBV", **_CONFIG)
    max_size_y = Cpt(EpicsSignalRO, "MaxSizeY_RBV", **_CONFIG)
    array_size_x = Cpt(EpicsSignalRO, "ArraySizeX_RBV", **_CONFIG)
    array_size_y = Cpt(EpicsSignalRO, "ArraySizeY_RBV", **_CONFIG)
    data_type = Cpt(TextSignalRO, "DataType_RBV", **_CONFIG)
    detector_state = Cpt(TextSignalRO, "DetectorState_RBV", kind=Kind.omitted)
    array_counter = Cpt(EpicsSignalRO, "ArrayCounter_RBV", kind=Kind.omitted)
    message = Cpt(TextSignalRO, "StatusMessage_RBV", kind=Kind.omitted)

    def frame_shape(self) -> tuple[int, int]:
        """(ky, kx) after binning, as read back."""
        return int(self.array_size_y.get()), int(self.array_size_x.get())

    def dtype(self) -> np.dtype:
        """The frames' numpy dtype, from ``DataType_RBV`` (what the IOC writes)."""
        return dtype_of_data_type(self.data_type.get(use_monitor=False))


class HDF5Writer(Device):
    """``PFX:DET:HDF1:`` — where and how the IOC writes frames.

    ``chunk_shape`` (``ChunkShape_RBV``) is the HDF5 chunk shape of the file being (or
    last) written, set by the IOC before ``Capture_RBV`` becomes 1: the device learns
    the file's layout from the IOC, never by opening the file (which may be on another
    host).
    """

    file_path = Cpt(VerifiedText, "FilePath", **_CONFIG)
    file_name = Cpt(VerifiedText, "FileName", **_CONFIG)
    file_template = Cpt(VerifiedText, "FileTemplate", **_CONFIG)
    file_number = Cpt(VerifiedSetting, "FileNumber", kind=Kind.omitted)
    auto_increment = Cpt(VerifiedEnum, "AutoIncrement", kind=Kind.omitted)
    num_capture = Cpt(VerifiedSetting, "NumCapture", kind=Kind.omitted)
    compression = Cpt(VerifiedEnum, "Compression", **_CONFIG)
    capture = Cpt(EpicsSignal, "Capture", kind=Kind.omitted)
    capture_rbv = Cpt(EpicsSignalRO, "Capture_RBV", kind=Kind.omitted)
    full_file_name = Cpt(TextSignalRO, "FullFileName_RBV", kind=Kind.omitted)
    num_captured = Cpt(EpicsSignalRO, "NumCaptured_RBV", kind=Kind.omitted)
    dropped_frames = Cpt(EpicsSignalRO, "DroppedFrames_RBV", kind=Kind.omitted)
    write_status = Cpt(TextSignalRO, "WriteStatus", kind=Kind.omitted)
    write_message = Cpt(TextSignalRO, "WriteMessage", kind=Kind.omitted)
    file_path_exists = Cpt(EpicsSignalRO, "FilePathExists_RBV", kind=Kind.omitted)
    free_space = Cpt(EpicsSignalRO, "FreeSpace_RBV", kind=Kind.omitted)  # MB
    chunk_shape = Cpt(EpicsSignalRO, "ChunkShape_RBV", kind=Kind.omitted)
