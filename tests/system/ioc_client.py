"""Helpers of the IOC system tests: a small CA client and acquisition recipes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from bluestem.procs import IocProcess

TIMEOUT = 15.0  # generous: only a failing test waits for it (disk write-back can stall)


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def stop_and_check(ioc: IocProcess) -> None:
    """Stop ``ioc`` by PID and assert that neither it nor a child of it survives."""
    kids = children_of(ioc.pid)
    ioc.stop()
    assert ioc.process.poll() is not None, "IOC still running after stop()"
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{k}").exists() for k in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [k for k in kids if Path(f"/proc/{k}").exists()], "orphaned IOC children"


def _searching(call, attempts: int = 3):
    """Run a sync-client call, again if it failed while *searching* for the channel
    (nothing was sent to the PV yet, so a retry is safe).  Each call uses a fresh UDP
    socket; on a busy 2-core machine a search reply was occasionally lost."""
    from caproto import CaprotoTimeoutError, RemoteProtocolError

    for attempt in range(attempts):
        try:
            return call()
        except (CaprotoTimeoutError, RemoteProtocolError) as exc:
            searching = isinstance(exc, RemoteProtocolError) or "search" in str(exc)
            if not searching or attempt == attempts - 1:
                raise


class CA:
    """A small synchronous CA client for tests (explicit timeouts, no repeater)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def read(self, name: str, **kw):
        from caproto.sync.client import read

        return _searching(lambda: read(self.prefix + name, timeout=TIMEOUT, repeater=False, **kw))

    def get(self, name: str):
        """The value: a scalar (number or enum string), or the array for waveforms."""
        data = self.read(name).data
        if len(data) == 1:
            value = data[0]
            return value.decode() if isinstance(value, bytes) else value.item()
        return data

    def get_str(self, name: str) -> str:
        """A long string held in a CHAR waveform."""
        return bytes(np.asarray(self.read(name).data, dtype=np.uint8)).rstrip(b"\0").decode()

    def alarm(self, name: str) -> tuple[int, int]:
        """(status, severity) of ``name``."""
        meta = self.read(name, data_type="time").metadata
        return int(meta.status), int(meta.severity)

    def put(self, name: str, value) -> None:
        """Write and wait for completion; raises if the IOC refuses the write."""
        from caproto.sync.client import write

        if isinstance(value, str) and self._is_char(name):
            value = value.encode() + b"\0"
            value = np.frombuffer(value, dtype=np.uint8)
        _searching(
            lambda: write(self.prefix + name, value, notify=True, timeout=TIMEOUT, repeater=False)
        )

    def _is_char(self, name: str) -> bool:
        from caproto import ChannelType

        return self.read(name, data_type="native").data_type == ChannelType.CHAR

    def wait(self, name: str, predicate, timeout: float = 60.0):
        """Poll ``name`` until ``predicate(value)``; return the value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.get(name)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.prefix}{name} = {value!r} after {timeout} s")
            time.sleep(0.05)

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Wait until no file is open and no scan runs."""
        self.wait("DET:HDF1:Capture_RBV", lambda v: v == 0, timeout)
        self.wait("SCAN:State_RBV", lambda v: v != "Running", timeout)
        self.wait("DET:cam1:Acquire_RBV", lambda v: v == 0, timeout)


# Settings a test file may change that the restore leaves alone: derived from others
# (Fov = Step x Shape, square binning), or a counter that must only go up (FileNumber: a
# lower number could name a file an earlier test wrote).
_NOT_RESTORED = {"SCAN:FovX", "SCAN:FovY", "DET:cam1:BinY", "DET:HDF1:FileNumber"}
# Applied before the rest: the binning must divide the frame size being restored.
_FIRST = ("DET:cam1:BinX",)


def setting_names() -> list[str]:
    """Every setpoint PV of ``bluestem ioc sim`` (relative to its prefix), from the IOC's
    own PV groups, in the order they are declared."""
    from bluestem.ioc.instrument import Instrument
    from bluestem.ioc.settings import Setpoint

    def walk(cls, prefix: str):
        for attr, prop in cls._pvs_.items():
            # A group's _pvs_ also lists its subgroups' PVs, as "sub.attr": walked below.
            if isinstance(prop, Setpoint) and "." not in attr:
                yield prefix + prop.pvspec.name
        for sub in cls._subgroups_.values():
            yield from walk(sub.group_cls, prefix + sub.prefix)

    names = [n for n in walk(Instrument, "") if n not in _NOT_RESTORED]
    return [*_FIRST, *(n for n in names if n not in _FIRST)]


def snapshot_settings(ca: CA) -> dict:
    """The IOC's settings now: ``{name: value}`` (strings for CHAR waveforms)."""
    return {n: ca.get_str(n) if ca._is_char(n) else ca.get(n) for n in setting_names()}


def restore_settings(ca: CA, snapshot: dict) -> None:
    """Put back every setting that differs from ``snapshot`` (the IOC must be idle), so a
    test file starts from the same IOC whatever ran before it on the same worker."""
    ca.wait_idle()
    now = snapshot_settings(ca)
    for name, value in snapshot.items():
        if now[name] != value:
            ca.put(name, value)
    after = snapshot_settings(ca)
    wrong = {n: (after[n], v) for n, v in snapshot.items() if after[n] != v}
    assert not wrong, f"settings not restored (now, wanted): {wrong}"


def configure_scan(ca: CA, *, shape=(16, 16), frame=64, dwell=1e-4, name="scan") -> None:
    """Settings for an externally triggered scan."""
    ca.put("DET:cam1:TriggerMode", "External")
    ca.put("DET:cam1:BinX", 1)
    ca.put("DET:cam1:SizeX", frame)
    ca.put("DET:cam1:SizeY", frame)
    ca.put("SCAN:ShapeY", shape[0])
    ca.put("SCAN:ShapeX", shape[1])
    ca.put("SCAN:Dwell", dwell)
    ca.put("DET:HDF1:FileName", name)


def run_scan(ca: CA, *, timeout: float = 120.0) -> str:
    """Capture, arm, start, wait until done; returns the file name."""
    ca.put("DET:HDF1:Capture", 1)
    path = ca.get_str("DET:HDF1:FullFileName_RBV")
    ca.put("DET:cam1:Acquire", 1)
    ca.put("SCAN:Start", 1)
    ca.wait_idle(timeout)
    return path


def twin_of(path: str):
    """The twin that produced ``path``, rebuilt from the file's metadata."""
    import h5py

    from bluestem.ioc.backend import twin_from_parameters

    with h5py.File(path, "r") as f:
        params = f["metadata/simulation"].attrs["twin_parameters"]
    return twin_from_parameters(params)


def frames_of(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(frames, received) as stored."""
    import h5py

    from bluestem.frames import FRAMES_PATH, RECEIVED_PATH

    with h5py.File(path, "r") as f:
        return f[FRAMES_PATH][()], f[RECEIVED_PATH][()]


def file_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def control_layer() -> str:
    """ophyd's control layer for the device tests: ``caproto`` unless the environment's
    ``BLUESTEM_TEST_CONTROL_LAYER`` says ``pyepics`` (test_control_layers.py runs the
    device and plan tests again that way)."""
    layer = os.environ.get("BLUESTEM_TEST_CONTROL_LAYER", "caproto")
    if layer not in ("caproto", "pyepics"):
        raise ValueError(f"BLUESTEM_TEST_CONTROL_LAYER={layer!r}: allowed caproto, pyepics")
    return layer
