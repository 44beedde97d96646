"""The record of CA servers that stopped answering, and the stall watchdog."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest

from bluestem.devices.liveness import Liveness, Watchdog, is_timeout, server_of


def _signal(host: str | None, pvname: str = "PFX:DET:HDF1:Capture_RBV"):
    """An object shaped like an ophyd EpicsSignal on the pyepics layer (``host:port``)."""
    return SimpleNamespace(pvname=pvname, _read_pv=SimpleNamespace(host=host))


def _caproto_signal(address):
    circuit = SimpleNamespace(circuit=SimpleNamespace(address=address))
    pv = SimpleNamespace(_caproto_pv=SimpleNamespace(circuit_manager=circuit))
    return SimpleNamespace(pvname="PFX:SCAN:State_RBV", _read_pv=pv)


def test_server_of_both_control_layers():
    assert server_of(_signal("127.0.0.1:5064")) == "127.0.0.1:5064"
    assert server_of(_caproto_signal(("127.0.0.1", 40123))) == "127.0.0.1:40123"
    assert server_of(_signal(None)) is None  # not connected
    assert server_of(SimpleNamespace(pvname="soft")) is None  # not an EPICS signal
    assert server_of(_caproto_signal(None)) is None


def test_only_timeouts_mark_a_server():
    from caproto import CaprotoTimeoutError
    from ophyd.signal import ReadTimeoutError

    assert is_timeout(CaprotoTimeoutError("no answer"))
    assert is_timeout(ReadTimeoutError("no answer"))
    assert not is_timeout(ValueError("refused"))
    live = Liveness()
    sig = _signal("127.0.0.1:5064")
    live.mark(sig, ValueError("a refused put says the server answers"))
    assert live.lost(sig) is None


def test_a_timeout_marks_that_server_only_until_cleared(caplog):
    live = Liveness()
    det = _signal("127.0.0.1:5064")
    same_ioc = _signal("127.0.0.1:5064", "PFX:MIC:HighTension_RBV")
    other_ioc = _signal("127.0.0.1:5070", "OTHER:MIC:HighTension_RBV")
    with caplog.at_level(logging.ERROR, logger="bluestem.devices.liveness"):
        live.mark(det, TimeoutError("read timed out"))
        live.mark(same_ioc, TimeoutError("a second one"))  # the first reason is kept
    assert len(caplog.records) == 1
    why = live.lost(same_ioc)
    assert why.startswith("server 127.0.0.1:5064 not answering for ")
    assert "PFX:DET:HDF1:Capture_RBV: TimeoutError: read timed out" in why
    assert live.lost(other_ioc) is None
    live.clear()
    assert live.lost(det) is None


def test_lost_device_asks_about_its_first_epics_signal():
    live = Liveness()
    sig = _signal("127.0.0.1:5064")
    device = SimpleNamespace(walk_signals=lambda: [SimpleNamespace(item=SimpleNamespace()),
                                                   SimpleNamespace(item=sig)])  # fmt: skip
    assert live.lost_device(device) is None
    live.mark(sig, TimeoutError("x"))
    assert "127.0.0.1:5064" in live.lost_device(device)


def test_watchdog_counts_unchanged_unpaused_time():
    dog = Watchdog(0.2)
    assert not dog.stalled((0, 0))
    time.sleep(0.25)
    assert dog.stalled((0, 0))
    assert not dog.stalled((1, 0))  # progress restarts the count
    time.sleep(0.25)
    assert not dog.stalled((1, 0), paused=True)  # a pause restarts it too
    assert not dog.stalled((1, 0))
    time.sleep(0.1)
    assert not dog.stalled((1, 0))
    time.sleep(0.15)
    assert dog.stalled((1, 0))
    assert not dog.stalled((1, 1))  # a dropped frame is progress


def test_watchdog_allows_longer_for_the_first_change():
    dog = Watchdog(0.1, first=0.4)
    assert dog.limit == 0.4 and not dog.stalled((0, 0))
    time.sleep(0.2)
    assert not dog.stalled((0, 0))  # 0.2 s > timeout, but no frame yet: first applies
    time.sleep(0.25)
    assert dog.stalled((0, 0))
    assert not dog.stalled((5, 0))
    assert dog.limit == 0.1  # from the first frame on, the stall timeout
    time.sleep(0.15)
    assert dog.stalled((5, 0))
    assert Watchdog(2.0, first=1.0).limit == 2.0  # never shorter than the timeout


@pytest.mark.parametrize("bad", [0, -1, 1e9, float("nan")])
def test_a_bad_stall_timeout_is_refused(bad):
    from bluestem.devices import PixelatedDetector

    with pytest.raises(ValueError, match=r"stall_timeout .* s: allowed 0 < s <= 3600"):
        PixelatedDetector("X:", name="det", root_path="/tmp", stall_timeout=bad)
