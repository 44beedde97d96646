"""The pixelated detector's camera: ``PFX:DET:cam1:`` (areaDetector names)."""

from __future__ import annotations

import numpy as np
from caproto.server import pvproperty

from bluestem.instrument import (
    COUNTER_DEPTHS,
    DATA_TYPES,
    EXPOSURE_MAX,
    PIXEL_SIZE,
    DetectorState,
    ImageMode,
    TriggerMode,
    data_type_of_depth,
    dtype_of_depth,
    names,
)

from .settings import LONG_STRING, SettingsGroup, long_string, readback, setting
from .status import wire_text
from .validation import InvalidSetting, Limits

__all__ = ["Camera"]

MAX_SIZE = 1024
BINNING = (1, 2, 4)
DEPTH = 12  # bits, the counter depth at startup


class Camera(SettingsGroup):
    """Detector acquisition settings (prefix ``DET:cam1:``).

    PVs (settings with ``_RBV``): Acquire (0/1, arms for external trigger / records an
    internally triggered series), AcquireTime (s), AcquirePeriod (s, >= AcquireTime),
    NumImages, ImageMode (Single/Multiple/Continuous), TriggerMode (Internal/External),
    CounterDepth ("1"/"6"/"12"/"24" bits), BinX, BinY (1, 2, 4; binning is square, writing
    one sets both), SizeX, SizeY (native pixels read out, multiple of 4); read-only
    MaxSizeX_RBV, MaxSizeY_RBV, ArraySizeX_RBV, ArraySizeY_RBV (binned frame),
    DataType_RBV, DetectorState_RBV, ArrayCounter_RBV, StatusMessage_RBV.

    The instrument tells it what happened with :meth:`armed`, :meth:`disarmed`,
    :meth:`acquiring`, :meth:`delivered` and :meth:`finished`.
    """

    message_attr = "message"

    acquire = pvproperty(
        name="Acquire", value=0, doc="1 arms (External) or starts a series (Internal); 0 stops."
    )
    acquire_rbv = readback("Acquire_RBV", 0, "1 while the detector is armed or acquiring.")

    @acquire.putter
    async def acquire(self, instance, value):
        if value not in (0, 1):
            raise InvalidSetting(instance.pvname, f"{value!r} is not allowed (allowed: 0, 1)")
        if value:
            await self.control.start_acquire()
        else:
            await self.control.stop_acquire()
        await self.cleared(instance)
        return value

    acquire_time, acquire_time_rbv = setting(
        "AcquireTime", 1e-3, "Exposure per frame (internal trigger).", units="s",
        limits=Limits(0.0, EXPOSURE_MAX, low_open=True), precision=7,
    )  # fmt: skip
    acquire_period, acquire_period_rbv = setting(
        "AcquirePeriod", 1e-3, "Frame period (internal trigger), at least AcquireTime.",
        units="s", limits=Limits(0.0, 100.0, low_open=True), precision=7,
    )  # fmt: skip

    @acquire_period.applies
    async def acquire_period(self, setting, value) -> None:
        """The period may not be shorter than the exposure."""
        exposure = self.acquire_time_rbv.value
        if value < exposure:
            raise InvalidSetting(
                self.pv(setting.name).pvname,
                f"{value} s is shorter than AcquireTime (allowed {exposure} s <= x <= 100 s)",
            )
        await self.read_back(setting, value)

    @acquire_time.applies
    async def acquire_time(self, setting, value) -> None:
        """areaDetector's behaviour: a longer exposure stretches the period."""
        await self.read_back(setting, value)
        if value > self.acquire_period_rbv.value:
            await self.acquire_period.write(value, verify_value=False)
            await self.acquire_period_rbv.write(value)

    num_images, num_images_rbv = setting(
        "NumImages", 1, "Frames per internally triggered series.", limits=Limits(1, 2**31 - 1)
    )
    image_mode, image_mode_rbv = setting(
        "ImageMode", ImageMode.MULTIPLE, "Series length: 1, NumImages, or until stopped.",
        enum_strings=names(ImageMode),
    )  # fmt: skip
    trigger_mode, trigger_mode_rbv = setting(
        "TriggerMode", TriggerMode.EXTERNAL,
        "Frames triggered by the scan generator or internally.",
        enum_strings=names(TriggerMode),
    )  # fmt: skip
    counter_depth, counter_depth_rbv = setting(
        "CounterDepth", str(DEPTH), "Counter depth in bits (sets the data type).",
        enum_strings=tuple(map(str, COUNTER_DEPTHS)),
    )  # fmt: skip
    bin_x, bin_x_rbv = setting("BinX", 1, "Binning along x.", choices=BINNING)
    bin_y, bin_y_rbv = setting("BinY", 1, "Binning along y.", choices=BINNING)

    @bin_x.applies
    async def bin_x(self, setting, value) -> None:
        await self._square_binning(setting, value)

    @bin_y.applies
    async def bin_y(self, setting, value) -> None:
        await self._square_binning(setting, value)

    async def _square_binning(self, setting, value) -> None:
        """Binning is square: it must divide both sizes, and BinX and BinY both follow."""
        for axis in "XY":
            size = self.rbv(f"Size{axis}").value
            if size % value:
                raise InvalidSetting(
                    self.pv(setting.name).pvname,
                    f"{value} does not divide Size{axis}={size} (allowed: 1, 2, 4 dividing "
                    "the size)",
                )
        for axis in "XY":
            if f"Bin{axis}" != setting.name:
                await self.pv(f"Bin{axis}").write(value, verify_value=False)
            await self.rbv(f"Bin{axis}").write(value)

    size_x, size_x_rbv = setting(
        "SizeX", 128, "Native pixels read out along x.", limits=Limits(8, MAX_SIZE, integer=True)
    )
    size_y, size_y_rbv = setting(
        "SizeY", 128, "Native pixels read out along y.", limits=Limits(8, MAX_SIZE, integer=True)
    )

    @size_x.applies
    async def size_x(self, setting, value) -> None:
        await self._binned_size(setting, value)

    @size_y.applies
    async def size_y(self, setting, value) -> None:
        await self._binned_size(setting, value)

    async def _binned_size(self, setting, value) -> None:
        """A size must be a multiple of the binning."""
        binning = self.bin_x_rbv.value
        if value % binning:
            raise InvalidSetting(
                self.pv(setting.name).pvname,
                f"{value} is not a multiple of the binning {binning}",
            )
        await self.read_back(setting, value)

    max_size_x = readback("MaxSizeX_RBV", MAX_SIZE, "Sensor width in pixels.")
    max_size_y = readback("MaxSizeY_RBV", MAX_SIZE, "Sensor height in pixels.")
    array_size_x = readback("ArraySizeX_RBV", 128, "Frame width after binning.")
    array_size_y = readback("ArraySizeY_RBV", 128, "Frame height after binning.")
    data_type = readback(
        "DataType_RBV", data_type_of_depth(DEPTH), "Frame data type.",
        enum_strings=tuple(DATA_TYPES),
    )  # fmt: skip
    detector_state = readback(
        "DetectorState_RBV", DetectorState.IDLE, "areaDetector state.",
        enum_strings=names(DetectorState),
    )  # fmt: skip
    array_counter = readback("ArrayCounter_RBV", 0, "Frames delivered in this acquisition.")
    message = long_string(
        "StatusMessage_RBV", DetectorState.IDLE, "Detector status or the last refused write.",
        read_only=True,
    )  # fmt: skip

    async def settle(self, spec, value) -> None:
        """Apply an accepted value; the frame size and data type follow every setting."""
        await super().settle(spec, value)
        await self.update_array_info()

    async def fit_sensor(self, sensor: tuple[int, int] | None, depth: int | None) -> None:
        """A real sensor of ``sensor`` = (ky, kx) pixels (the maximum and the size read
        out) and the counter ``depth`` it starts with; None leaves either as it is."""
        if sensor is not None:
            ky, kx = sensor
            await self.max_size_y.write(ky)
            await self.max_size_x.write(kx)
            await self.size_y.write(ky)
            await self.size_x.write(kx)
        if depth is not None:
            await self.counter_depth.write(str(depth))

    async def update_array_info(self) -> None:
        """ArraySizeX/Y_RBV and DataType_RBV from the settings read back."""
        model = self.model()
        await self.array_size_x.write(model["shape"][1] // model["binning"])
        await self.array_size_y.write(model["shape"][0] // model["binning"])
        await self.data_type.write(data_type_of_depth(model["counter_depth"]))

    # -- what happened (called by the instrument) -----------------------------------------
    async def armed(self) -> None:
        """Armed for an externally triggered scan."""
        await self.acquire_rbv.write(1)
        await self.detector_state.write(DetectorState.WAITING.value)
        await self.message.write("Armed: waiting for the scan")

    async def disarmed(self) -> None:
        """No longer armed (nothing was acquired)."""
        await self.acquire_rbv.write(0)
        await self.detector_state.write(DetectorState.IDLE.value)

    async def acquiring(self) -> None:
        """Frames are being recorded."""
        await self.acquire_rbv.write(1)
        await self.detector_state.write(DetectorState.ACQUIRE.value)
        await self.array_counter.write(0)
        await self.message.write("Acquiring")

    async def delivered(self, count: int) -> None:
        """``count`` frames were delivered in this acquisition so far."""
        await self.array_counter.write(count)

    async def finished(self, state: DetectorState, text: str) -> None:
        """The acquisition ended: Acquire back to 0, ``state`` and ``text`` published."""
        await self.acquire.write(0, verify_value=False)
        await self.acquire_rbv.write(0)
        await self.detector_state.write(state.value)
        await self.message.write(wire_text(text, LONG_STRING - 1))

    # -- what the instrument reads --------------------------------------------------------
    @property
    def internal(self) -> bool:
        """True when frames are triggered internally (a series, not the scan)."""
        return self.trigger_mode_rbv.value == TriggerMode.INTERNAL

    def series_length(self) -> int | None:
        """Frames of an internally triggered series: 1, NumImages, or None (until
        stopped)."""
        mode = self.image_mode_rbv.value
        if mode == ImageMode.SINGLE:
            return 1
        if mode == ImageMode.MULTIPLE:
            return int(self.num_images_rbv.value)
        return None

    def exposure(self) -> float:
        """AcquireTime read back, in s."""
        return float(self.acquire_time_rbv.value)

    def period(self) -> float:
        """AcquirePeriod read back, in s."""
        return float(self.acquire_period_rbv.value)

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
        """(ky, kx) of one binned frame."""
        m = self.model()
        return (m["shape"][0] // m["binning"], m["shape"][1] // m["binning"])

    def dtype(self) -> np.dtype:
        """Pixel type of the frames (from the counter depth)."""
        return dtype_of_depth(self.counter_depth_rbv.value)

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
