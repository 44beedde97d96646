"""The ``suspenders:`` inventory entry: validated by name, each condition trips and clears
as documented (on in-memory ophyd signals; the system test trips them on the twin), and a
resume re-verifies the settings."""

from __future__ import annotations

import re

import pytest
from ophyd import Signal

from bluestem.session.suspenders import (
    SettingsChanged,
    check_suspenders,
    make_suspenders,
    resumed,
)


class _Setting:
    def __init__(self, name: str, value):
        self.setpoint = Signal(name=f"{name}_sp", value=value)
        self.readback = Signal(name=f"{name}_rbv", value=value)
        self.readback.pvname = f"MIC:{name}_RBV"
        self.requested = None


class _Mic:
    def __init__(self):
        self.beam_blank = _Setting("BeamBlank", "Off")
        self.beam_current = _Setting("BeamCurrent", 10.0)
        self.high_tension = _Setting("HighTension", 200.0)
        self.mismatch: list[str] = []

    def mismatched_settings(self):
        return list(self.mismatch)


class _Hdf:
    def __init__(self):
        self.free_space = Signal(name="free", value=5000.0)
        self.free_space.pvname = "DET:HDF1:FreeSpace_RBV"


class _Det:
    def __init__(self):
        self.hdf = _Hdf()


def _devices():
    return {"mic": _Mic(), "det": _Det()}


def _by_name(suspenders):
    return {s.name: s for s in suspenders}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ([1], ["suspenders=[1]", "allowed a mapping"]),
        ({"beam": True}, ["unknown key(s) ['beam']", "beam_blank"]),
        ({"beam_blank": "yes"}, ["suspenders.beam_blank='yes'", "true or false"]),
        ({"beam_current": 5}, ["suspenders.beam_current=5", "with below"]),
        ({"beam_current": {"below": -1}}, ["beam_current.below=-1", "[0, 1e+09]"]),
        ({"beam_current": {"below": 5, "resume": 4}}, ["resume=4", ">= below"]),
        ({"high_tension": {"tol": 1}}, ["suspenders.high_tension", "with tolerance"]),
        ({"disk": {"below_mb": 100, "resume_mb": 50}}, ["resume_mb=50", ">= below_mb"]),
        ({"disk": {"below_mb": float("nan")}}, ["disk.below_mb=nan"]),
        ({"sleep": -1}, ["suspenders.sleep=-1", "[0, 3600]"]),
    ],
)
def test_bad_entries_are_refused_naming_them(value, words):
    with pytest.raises(ValueError) as info:
        check_suspenders(value)
    for word in words:
        assert word in str(info.value)


def test_a_session_without_the_device_a_suspender_needs_is_refused():
    with pytest.raises(
        ValueError, match=re.escape("suspenders.disk: no session device has 'hdf.free_space'")
    ):
        make_suspenders(check_suspenders({"disk": {"below_mb": 10}}), {"mic": _Mic()})


def test_each_condition_trips_names_the_pv_and_clears():
    devices = _devices()
    config = check_suspenders({"beam_blank": True, "beam_current": {"below": 5, "resume": 8},
                               "high_tension": {"tolerance": 0.5},
                               "disk": {"below_mb": 1000}})  # fmt: skip
    found = _by_name(make_suspenders(config, devices))
    assert sorted(found) == ["beam_blank", "beam_current", "disk", "high_tension"]
    mic = devices["mic"]
    blank = found["beam_blank"]
    assert not blank._should_suspend("Off") and blank._should_resume("Off")
    assert blank._should_suspend("On")
    assert blank._get_justification() == "beam_blank: MIC:BeamBlank_RBV is On: the beam is blanked"
    mic.beam_blank.requested = "On"  # the session blanked it (a dark reference): no trip
    assert not blank._should_suspend("On") and blank._should_resume("On")

    current = found["beam_current"]
    assert current._should_suspend(4.9) and "4.9 pA, below 5 pA" in current._get_justification()
    assert not current._should_resume(6.0)  # hysteresis: back only at 8 pA
    assert current._should_resume(8.0)

    ht = found["high_tension"]
    assert not ht._should_suspend(150.0)  # no setpoint seen yet: nothing to compare with
    mic.high_tension.setpoint.put(200.0)  # its monitor's first value (EPICS sends one)
    assert not ht._should_suspend(200.4)
    assert ht._should_suspend(199.0)
    assert "off its setpoint 200 kV by more than 0.5 kV" in ht._get_justification()
    mic.high_tension.setpoint.put(199.0)  # a new setpoint moves the band with it
    assert ht._should_resume(199.0)

    disk = found["disk"]
    assert (
        disk._should_suspend(900.0) and "900 MB free, below 1000 MB" in disk._get_justification()
    )
    assert not disk._should_resume(1100.0) and disk._should_resume(1200.0)  # 1.2 x below
    assert not disk._should_suspend(-1.0)  # unknown is no reason to stop


def test_the_resume_re_verifies_the_settings_and_goes_on_record():
    devices = _devices()
    (msg,) = list(resumed("beam_blank", devices))
    assert msg.command == "record_interruption" and msg.args == ("resume: beam_blank clear",)
    devices["mic"].mismatch = ["MIC:Defocus = 10.0 but its readback is 3.0 (allowed ±0.0501)"]
    with pytest.raises(SettingsChanged, match="cannot resume after beam_blank: MIC:Defocus"):
        list(resumed("beam_blank", devices))


def test_the_ioc_condition_trips_on_a_lost_connection_of_each_device():
    from ophyd import Component as Cpt
    from ophyd import Device

    class Soft(Device):
        value = Cpt(Signal, value=1)

    soft = Soft(name="soft")
    soft.value.pvname = "SOFT:Value"
    (ioc,) = make_suspenders(check_suspenders({"ioc": True}), {"soft": soft})
    assert ioc.name == "ioc" and ioc._sig is soft.value
    assert ioc._should_suspend(False)
    assert ioc._get_justification() == "ioc: soft's IOC (SOFT:Value) is disconnected"
    assert ioc._should_resume(True) and not ioc._should_suspend(True)
