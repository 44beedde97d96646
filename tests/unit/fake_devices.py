"""bluestem's devices without an IOC: ophyd.sim fakes (the IOC itself: ``fake_ioc``).

``ophyd.sim.make_fake_device`` replaces ``EpicsSignal``/``EpicsSignalRO`` components by
their fakes, but maps any other non-Device class to itself: bluestem's own
``EpicsSignal`` subclasses (``TextSignal``, ``TextSignalRO``, ``CheckedSignal``) would stay
real signals that try to connect. :func:`register_fakes` puts fakes of them in
``ophyd.sim.fake_device_cache`` (and fakes of the two base classes that carry their PV
names, which ophyd's fakes drop, so that error messages name PVs as in production).

:func:`fake_detector` is a detector at rest; :func:`echo_settings` and
:func:`echo_capture` wire the putters a test needs (a setting's readback follows, a put
is refused, ``Capture``/``Acquire`` answer). ``fake_ioc.FakeIOC`` is the whole IOC.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np
from ophyd import EpicsSignal, EpicsSignalRO, Signal
from ophyd.sim import FakeEpicsSignal, FakeEpicsSignalRO, fake_device_cache
from ophyd.sim import instantiate_fake_device as _instantiate

from bluestem.devices import (
    CheckedSignal,
    PixelatedDetector,
    PutRefused,
    VerifiedSetting,
)
from bluestem.devices.text import TextSignal, TextSignalRO, text_description
from bluestem.instrument import (
    Compression,
    DetectorState,
    ImageMode,
    TriggerMode,
    WriteStatus,
)

__all__ = [
    "PREFIX",
    "echo_capture",
    "echo_settings",
    "fake_detector",
    "initial",
    "instantiate",
    "register_fakes",
]

PREFIX = "FAKE:"


class FakePV(FakeEpicsSignal):
    """ophyd's FakeEpicsSignal, keeping its PV names (``pvname``, ``setpoint_pvname``)."""

    def __init__(self, read_pv, write_pv=None, **kwargs):
        super().__init__(read_pv, write_pv, **kwargs)
        self.pvname = read_pv
        self.setpoint_pvname = write_pv or read_pv


class FakePVRO(FakeEpicsSignalRO):
    """ophyd's FakeEpicsSignalRO, keeping its PV name."""

    def __init__(self, read_pv, **kwargs):
        super().__init__(read_pv, **kwargs)
        self.pvname = read_pv


class FakeText(FakePV):
    """Fake :class:`~bluestem.devices.text.TextSignal` (``string=True``)."""

    def __init__(self, read_pv, write_pv=None, *, string=True, **kwargs):
        super().__init__(read_pv, write_pv, string=string, **kwargs)

    def describe(self):
        return text_description(super().describe())


class FakeTextRO(FakePVRO):
    """Fake :class:`~bluestem.devices.text.TextSignalRO` (``string=True``)."""

    def __init__(self, read_pv, *, string=True, **kwargs):
        super().__init__(read_pv, string=string, **kwargs)

    def describe(self):
        return text_description(super().describe())


class FakeChecked(FakePV):
    """Fake :class:`~bluestem.devices.CheckedSignal`: ``set()`` is its put on a thread."""

    set = CheckedSignal.set


def register_fakes() -> None:
    """Fakes for bluestem's signal classes in ``ophyd.sim.fake_device_cache``."""
    fake_device_cache.update({
        EpicsSignal: FakePV,
        EpicsSignalRO: FakePVRO,
        TextSignal: FakeText,
        TextSignalRO: FakeTextRO,
        CheckedSignal: FakeChecked,
    })  # fmt: skip


def instantiate(cls, **kwargs):
    """``ophyd.sim.instantiate_fake_device`` with bluestem's fakes registered."""
    register_fakes()
    return _instantiate(cls, **kwargs)


def _settings(device) -> list[VerifiedSetting]:
    return [sub for _, sub in device.walk_subdevices() if isinstance(sub, VerifiedSetting)]


def initial(setting: VerifiedSetting, value) -> None:
    """A verified setting at ``value`` (setpoint and readback), no putter run."""
    Signal.put(setting.setpoint, value, force=True)
    setting.readback.sim_put(value)


def fake_detector(root, *, name: str = "det", frame_shape=(16, 16), data_type="UInt16",
                  **kwargs) -> PixelatedDetector:  # fmt: skip
    """A fake PixelatedDetector whose settings echo their setpoints, at rest."""
    det = instantiate(PixelatedDetector, prefix=PREFIX + "DET:", name=name,
                      **({"root_path": str(root)} | kwargs))  # fmt: skip
    echo_settings(det)
    ky, kx = frame_shape
    cam, hdf = det.cam, det.hdf
    for setting, value in [
        (cam.acquire_time, 1e-3), (cam.acquire_period, 1e-3), (cam.num_images, 1),
        (cam.image_mode, ImageMode.MULTIPLE), (cam.trigger_mode, TriggerMode.INTERNAL),
        (cam.counter_depth, "12"), (cam.bin_x, 1), (cam.bin_y, 1), (cam.size_x, kx),
        (cam.size_y, ky), (hdf.file_path, ""), (hdf.file_name, ""),
        (hdf.file_template, "%s%s_%6.6d.h5"), (hdf.file_number, 0), (hdf.auto_increment, "No"),
        (hdf.num_capture, 0), (hdf.compression, Compression.NONE),
    ]:  # fmt: skip
        initial(setting, str(value) if isinstance(value, str) else value)
    for signal, value in [
        (cam.max_size_x, kx), (cam.max_size_y, ky), (cam.array_size_x, kx),
        (cam.array_size_y, ky), (cam.data_type, data_type),
        (cam.detector_state, DetectorState.IDLE), (cam.message, ""),
        (hdf.write_status, WriteStatus.OK), (hdf.write_message, ""), (hdf.full_file_name, ""),
        (hdf.chunk_shape, np.zeros(4, dtype=np.int32)), (hdf.file_path_exists, 1),
    ]:  # fmt: skip
        signal.sim_put(str(value) if isinstance(value, str) else value)
    return det


def echo_settings(device, *, refuse: dict | None = None, stuck: Iterable[str] = (),
                  after: Callable | None = None) -> None:  # fmt: skip
    """Every verified setting of ``device``: the readback follows the setpoint, except
    for ``stuck`` PVs; a PV in ``refuse`` raises :class:`PutRefused` with its message;
    ``after(setting, value)`` runs after each put (coupled settings)."""
    refuse = {} if refuse is None else refuse
    stuck = set(stuck)

    for setting in _settings(device):

        def putter(value, *_, _s=setting, **__):
            pv = _s.setting
            if pv in refuse:
                raise PutRefused(pv, refuse[pv])
            Signal.put(_s.setpoint, value, force=True)
            if pv not in stuck:
                _s.readback.sim_put(value)
            if after is not None:
                after(_s, value)

        setting.setpoint.sim_set_putter(putter)


def echo_capture(det, *, chunk_shape, refuse: dict | None = None) -> None:
    """The least of the IOC a detector's documents need, no file written: ``Capture=1``
    publishes ``FullFileName_RBV`` (``{FilePath}/{FileName}.h5``) and ``ChunkShape_RBV``
    then ``Capture_RBV=1``; ``Acquire=1`` arms (``Acquire_RBV=1``), and in internal
    trigger mode takes its frame and closes the file at once. The counters of a fly
    scan are the test's to ``sim_put``. ``refuse``: PV name -> message of a refused put.
    """
    refuse = {} if refuse is None else refuse
    cam, hdf = det.cam, det.hdf

    def guard(signal, action):
        def putter(value, *_, **__):
            if signal.pvname in refuse:
                raise PutRefused(signal.pvname, refuse[signal.pvname])
            Signal.put(signal, value, force=True)
            action(value)

        signal.sim_set_putter(putter)

    def capture(value):
        if value:
            full = os.path.join(str(hdf.file_path.get()), f"{hdf.file_name.get()}.h5")
            hdf.full_file_name.sim_put(full)
            hdf.chunk_shape.sim_put(np.asarray(chunk_shape, dtype=np.int32))
            hdf.num_captured.sim_put(0)
            hdf.dropped_frames.sim_put(0)
        hdf.capture_rbv.sim_put(1 if value else 0)

    def acquire(value):
        cam.acquire_rbv.sim_put(1 if value else 0)
        if value and cam.trigger_mode.get() == TriggerMode.INTERNAL:
            hdf.num_captured.sim_put(1)
            hdf.capture_rbv.sim_put(0)
            cam.acquire_rbv.sim_put(0)

    guard(hdf.capture, capture)
    guard(cam.acquire, acquire)
