"""The pixelated detector's camera: ``PFX:DET:cam1:`` (areaDetector names)."""

from __future__ import annotations

import numpy as np
from caproto.server import pvproperty

from .settings import SettingsGroup, long_string, readback, setting
from .validation import InvalidSetting, Limits

__all__ = ["DETECTOR_STATES", "Camera"]

DETECTOR_STATES = (
    "Idle", "Acquire", "Readout", "Correct", "Saving", "Aborting", "Error", "Waiting",
    "Initializing", "Disconnected", "Aborted",
)  # fmt: skip
DATA_TYPES = ("UInt8", "UInt16", "UInt32")
COUNTER_DEPTHS = ("1", "6", "12", "24")
MAX_SIZE = 1024
PIXEL_SIZE = 55e-6  # m, a Medipix3/Timepix pixel


class Camera(SettingsGroup):
    """Detector acquisition settings (prefix ``DET:cam1:``).

    PVs (settings with ``_RBV``): Acquire (0/1, arms for external trigger / records an
    internally triggered series), AcquireTime (s), AcquirePeriod (s, >= AcquireTime),
    NumImages, ImageMode (Single/Multiple/Continuous), TriggerMode (Internal/External),
    CounterDepth ("1"/"6"/"12"/"24" bits), BinX, BinY (1, 2, 4; binning is square, writing
    one sets both), SizeX, SizeY (native pixels read out, multiple of 4); read-only
    MaxSizeX_RBV, MaxSizeY_RBV, ArraySizeX_RBV, ArraySizeY_RBV (binned frame),
    DataType_RBV, DetectorState_RBV, ArrayCounter_RBV, StatusMessage_RBV.
    """

    message_attr = "message"

    acquire = pvproperty(
        name="Acquire", value=0, doc="1 arms (External) or starts a series (Internal); 0 stops."
    )
    acquire_rbv = readback("Acquire_RBV", 0, "1 while the detector is armed or acquiring.")
    acquire_time, acquire_time_rbv = setting(
        "AcquireTime", 1e-3, "Exposure per frame (internal trigger).", units="s",
        limits=Limits(0.0, 10.0, low_open=True), precision=7,
    )  # fmt: skip
    acquire_period, acquire_period_rbv = setting(
        "AcquirePeriod", 1e-3, "Frame period (internal trigger), at least AcquireTime.",
        units="s", limits=Limits(0.0, 100.0, low_open=True), precision=7,
    )  # fmt: skip
    num_images, num_images_rbv = setting(
        "NumImages", 1, "Frames per internally triggered series.", limits=Limits(1, 2**31 - 1)
    )
    image_mode, image_mode_rbv = setting(
        "ImageMode", "Multiple", "Series length: 1, NumImages, or until stopped.",
        enum_strings=("Single", "Multiple", "Continuous"),
    )  # fmt: skip
    trigger_mode, trigger_mode_rbv = setting(
        "TriggerMode", "External", "Frames triggered by the scan generator or internally.",
        enum_strings=("Internal", "External"),
    )  # fmt: skip
    counter_depth, counter_depth_rbv = setting(
        "CounterDepth", "12", "Counter depth in bits (sets the data type).",
        enum_strings=COUNTER_DEPTHS,
    )  # fmt: skip
    bin_x, bin_x_rbv = setting("BinX", 1, "Binning along x.", choices=(1, 2, 4))
    bin_y, bin_y_rbv = setting("BinY", 1, "Binning along y.", choices=(1, 2, 4))
    size_x, size_x_rbv = setting(
        "SizeX", 128, "Native pixels read out along x.", limits=Limits(8, MAX_SIZE, integer=True)
    )
    size_y, size_y_rbv = setting(
        "SizeY", 128, "Native pixels read out along y.", limits=Limits(8, MAX_SIZE, integer=True)
    )
    max_size_x = readback("MaxSizeX_RBV", MAX_SIZE, "Sensor width in pixels.")
    max_size_y = readback("MaxSizeY_RBV", MAX_SIZE, "Sensor height in pixels.")
    array_size_x = readback("ArraySizeX_RBV", 128, "Frame width after binning.")
    array_size_y = readback("ArraySizeY_RBV", 128, "Frame height after binning.")
    data_type = readback("DataType_RBV", "UInt16", "Frame data type.", enum_strings=DATA_TYPES)
    detector_state = readback(
        "DetectorState_RBV", "Idle", "areaDetector state.", enum_strings=DETECTOR_STATES
    )
    array_counter = readback("ArrayCounter_RBV", 0, "Frames delivered in this acquisition.")
    message = long_string(
        "StatusMessage_RBV", "Idle", "Detector status or the last refused write.", read_only=True
    )

    @acquire.putter
    async def acquire(self, instance, value):
        if value not in (0, 1):
            raise InvalidSetting(instance.pvname, f"{value!r} is not allowed (allowed: 0, 1)")
        if value:
            await self.root.start_acquire()
        else:
            await self.root.stop_acquire()
        await self.root.clear_flag(instance)
        return value

    async def setting_changed(self, spec, value) -> None:
        name = spec.name
        if name in ("BinX", "BinY"):
            for axis in "XY":
                size = self.rbv(f"Size{axis}").value
                if size % value:
                    raise InvalidSetting(
                        self.pv(name).pvname,
                        f"{value} does not divide Size{axis}={size} (allowed: 1, 2, 4 dividing "
                        "the size)",
                    )
            for other in ("BinX", "BinY"):
                if other != name:
                    await self.pv(other).write(value, verify_value=False)
                await self.rbv(other).write(value)
        elif name in ("SizeX", "SizeY"):
            binning = self.bin_x_rbv.value
            if value % binning:
                raise InvalidSetting(
                    self.pv(name).pvname,
                    f"{value} is not a multiple of the binning {binning}",
                )
            await super().setting_changed(spec, value)
        elif name == "AcquirePeriod" and value < self.acquire_time_rbv.value:
            raise InvalidSetting(
                self.pv(name).pvname,
                f"{value} s is shorter than AcquireTime "
                f"(allowed {self.acquire_time_rbv.value} s <= x <= 100 s)",
            )
        elif name == "AcquireTime" and value > self.acquire_period_rbv.value:
            # areaDetector's behaviour: a longer exposure stretches the period.
            await super().setting_changed(spec, value)
            await self.acquire_period.write(value, verify_value=False)
            await self.acquire_period_rbv.write(value)
        else:
            await super().setting_changed(spec, value)
        await self.update_array_info()

    async def update_array_info(self) -> None:
        model = self.model()
        await self.array_size_x.write(model["shape"][1] // model["binning"])
        await self.array_size_y.write(model["shape"][0] // model["binning"])
        depth = model["counter_depth"]
        await self.data_type.write(
            "UInt8" if depth <= 8 else "UInt16" if depth <= 16 else "UInt32"
        )

    def model(self) -> dict:
        """The detector as read back (the twin's ``DetectorModel`` fields, camera length
        excepted: it belongs to the microscope)."""
        return {
            "shape": (int(self.size_y_rbv.value), int(self.size_x_rbv.value)),
            "pixel_size": PIXEL_SIZE,
            "counter_depth": int(self.counter_depth_rbv.value),
            "binning": int(self.bin_x_rbv.value),
        }

    def frame_shape(self) -> tuple[int, int]:
        m = self.model()
        return (m["shape"][0] // m["binning"], m["shape"][1] // m["binning"])

    def dtype(self) -> np.dtype:
        depth = int(self.counter_depth_rbv.value)
        return np.dtype(np.uint8 if depth <= 8 else np.uint16 if depth <= 16 else np.uint32)

    def state(self) -> dict:
        """Detector settings for the file's metadata."""
        return {
            **self.model(),
            "frame_shape": self.frame_shape(),
            "dtype": self.dtype().name,
            "acquire_time": self.acquire_time_rbv.value,
            "acquire_period": self.acquire_period_rbv.value,
            "num_images": self.num_images_rbv.value,
            "image_mode": self.image_mode_rbv.value,
            "trigger_mode": self.trigger_mode_rbv.value,
        }
