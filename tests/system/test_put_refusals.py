"""A refused put reaches the session at once, as an error carrying the IOC's message.

The IOC answers a refused write-with-notification with a CA error (ECA_PUTFAIL and its
text); ophyd's caproto layer used to ignore it and time out seconds later. Checked for a
session whose data root does not exist on the IOC side, and for every writable PV of the
IOC through ophyd's signals.
"""

from __future__ import annotations

import time

import pytest
from ioc_client import control_layer
from sessions import inventory
from test_ioc_pvs import list_pvs

pytestmark = pytest.mark.system

# Writes these PVs accept whatever the value (busy-free triggers).
ANY_VALUE = ("SCAN:Start", "SCAN:Stop", "SCAN:Abort", "STATUS:Acknowledge")
STRINGS = {
    "DET:HDF1:FilePath": "/nonexistent/raw",
    "DET:HDF1:FileName": "a/b",
    "DET:HDF1:FileTemplate": "%d%d%d%d",
}


def _bad_value(name: str, dtype: str):
    if dtype.startswith("CHAR"):
        return STRINGS[name]
    if dtype.startswith("ENUM"):
        return 99  # no such state
    if dtype == "LONG":
        return -5  # below every integer setting's range, not 0 or 1
    return -1e12  # below every float setting's range


def test_data_root_missing_on_the_ioc_is_refused_at_once(sim, tmp_path):
    from bluesky.utils import FailedStatus

    from bluestem.devices import PutRefused
    from bluestem.plans import raster
    from bluestem.session import build_session

    ioc, ca, _data = sim
    number = ca.get("DET:HDF1:FileNumber_RBV")
    other = tmp_path / "other-raw"  # the session's idea of the data root; not the IOC's
    s = build_session(inventory(ioc, other, tmp_path / "journal"))
    stops = []
    s.RE.subscribe(lambda name, doc: stops.append(doc) if name == "stop" else None)
    try:
        t0 = time.monotonic()
        with pytest.raises(FailedStatus) as info:
            s.RE(raster(s.det, s.scan, shape=(4, 4), dwell=1e-4, microscope=s.mic))
        assert time.monotonic() - t0 < 3  # not a 7 s put timeout
    finally:
        s.close()
    cause = info.value.__cause__
    assert isinstance(cause, PutRefused)
    assert cause.pvname == ioc.prefix + "DET:HDF1:FilePath"
    assert f"'{other}' does not exist or is not a directory" in str(cause)
    (stop,) = stops
    assert stop["exit_status"] == "fail"
    assert (
        "PutRefused" in stop["reason"] and "does not exist or is not a directory" in stop["reason"]
    )
    assert ca.get("DET:HDF1:FileNumber_RBV") == number  # nothing was written


def test_every_refused_put_fails_at_once_with_the_iocs_message(sim, ca_env):
    import ophyd
    from ophyd import EpicsSignal

    from bluestem.devices import PutRefused
    from bluestem.devices.put_errors import put_checked

    ioc = sim[0]
    ophyd.set_cl(control_layer())
    writable = [(row[0], row[1]) for row in list_pvs(ioc.prefix) if row[2] == "RW"]
    names = [full[len(ioc.prefix) :] for full, _ in writable]
    assert set(STRINGS) <= set(names) and len(writable) > 40
    checked = []
    for full, dtype in writable:
        name = full[len(ioc.prefix) :]
        if name in ANY_VALUE:
            continue
        signal = EpicsSignal(full, name="sig", string=dtype.startswith("CHAR"))
        signal.wait_for_connection(timeout=10)
        before = signal.get(use_monitor=False)
        t0 = time.monotonic()
        with pytest.raises(PutRefused) as info:
            put_checked(signal, _bad_value(name, dtype), timeout=10)
        took = time.monotonic() - t0
        assert took < 1.0, f"{name}: refused after {took:.2f} s"
        assert info.value.pvname == full
        assert full in str(info.value), str(info.value)
        assert "allowed" in str(info.value) or "not" in str(info.value), str(info.value)
        if not isinstance(before, str) or dtype.startswith("CHAR"):
            assert signal.get(use_monitor=False) == before, name  # unchanged
        checked.append(name)
        signal.destroy()
    assert len(checked) == len(writable) - len(ANY_VALUE)
