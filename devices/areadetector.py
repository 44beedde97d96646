"""The pixelated detector's ``cam1:`` and ``HDF1:`` sub-devices (areaDetector names)."""

from __future__ import annotations

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Kind

from .text import TextSignalRO
from .verified import VerifiedEnum, VerifiedSetting

__all__ = ["DetectorCam", "HDF5Writer", "dtype_of_depth"]

_CONFIG = {"kind": Kind.config}


def dtype_of_depth(depth: int | str) -> np.dtype:
    """Frame dtype of a counter depth in bits: uint8 (1, 6), uint16 (12), uint32 (24)."""
    bits = int(depth)
    if bits not in (1, 6, 12, 24):
        raise ValueError(f"counter depth {depth!r}: allowed 1, 6, 12, 24 bits")
    return np.dtype(np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32)


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
        return dtype_of_depth(self.counter_depth.get())


class HDF5Writer(Device):
    """``PFX:DET:HDF1:`` — where and how the IOC writes frames."""

    file_path = Cpt(VerifiedEnum, "FilePath", **_CONFIG)
    file_name = Cpt(VerifiedEnum, "FileName", **_CONFIG)
    file_template = Cpt(VerifiedEnum, "FileTemplate", **_CONFIG)
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
