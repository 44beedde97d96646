"""Every refused write: the put fails, the PV alarms, the messages name the PV, the value
and the allowed range, STATUS goes WARN, the IOC keeps answering and an earlier file is
untouched."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from caproto import AlarmSeverity, AlarmStatus
from ioc_client import configure_scan, run_scan

pytestmark = pytest.mark.system


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def earlier_file(sim):
    """A file written before the bad inputs, with its checksum."""
    ca = sim[1]
    configure_scan(ca, shape=(4, 4), frame=16, name="earlier")
    path = run_scan(ca)
    return path, digest(path)


def check_refused(ca, pv, value, *, message_pv, expect):
    """Put ``value``; assert the refusal is visible everywhere; return the CA error."""
    before = ca.get(pv)
    with pytest.raises(Exception) as info:  # caproto's ErrorResponseReceived
        ca.put(pv, value)
    text = str(info.value)
    for word in expect:
        assert word in text, text
    status, severity = ca.alarm(pv)
    assert status == AlarmStatus.WRITE
    assert severity in (AlarmSeverity.MINOR_ALARM, AlarmSeverity.MAJOR_ALARM)
    message = ca.get_str(message_pv)
    assert pv in message
    for word in expect:
        assert word in message, message
    assert ca.get("STATUS") == "WARN"
    assert ca.alarm("STATUS") == (AlarmStatus.STATE, AlarmSeverity.MINOR_ALARM)
    assert pv in ca.get_str("STATUS:Message")
    after = ca.get(pv)
    if isinstance(before, str | int | float):
        assert after == before  # the setpoint did not change
    return message


def check_cleared(ca, pv, value, *, last=True):
    """A good write clears the flag (and STATUS, once the last flag is cleared)."""
    ca.put(pv, value)
    assert ca.alarm(pv) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
    if last:
        assert ca.get("STATUS") == "OK", ca.get_str("STATUS:Message")
        assert ca.alarm("STATUS") == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)


@pytest.fixture(autouse=True)
def still_fine(sim, earlier_file):
    yield
    ca = sim[1]
    assert ca.get("STATUS") in ("OK", "WARN")  # the IOC still answers
    assert sim[0].alive()
    path, sha = earlier_file
    assert digest(path) == sha  # nothing already written was touched


@pytest.mark.parametrize(
    "pv, value, expect",
    [
        ("SCAN:Dwell", 0.0, ["0 s", "0 < x <= 1 s"]),
        ("SCAN:Dwell", -1e-3, ["-0.001 s", "0 < x <= 1 s"]),
        ("DET:cam1:AcquireTime", 0.0, ["0 s", "0 < x <= 10 s"]),
        ("DET:cam1:AcquireTime", -2.0, ["-2 s", "0 < x <= 10 s"]),
        ("SCAN:ShapeX", 0, ["0", "1 <= x <= 4096"]),
        ("SCAN:ShapeY", 5000, ["5000", "1 <= x <= 4096"]),
    ],
)
def test_out_of_range(ca, pv, value, expect):
    group = "DET:cam1:StatusMessage_RBV" if pv.startswith("DET") else "SCAN:StatusMessage_RBV"
    good = ca.get(pv)
    check_refused(ca, pv, value, message_pv=group, expect=expect)
    check_cleared(ca, pv, good)


@pytest.mark.parametrize(
    "pv, value, message_pv",
    [
        ("SCAN:Mode", "Bogus", "SCAN:StatusMessage_RBV"),
        ("SCAN:Mode", 7, "SCAN:StatusMessage_RBV"),
        ("DET:cam1:TriggerMode", "Sideways", "DET:cam1:StatusMessage_RBV"),
        ("DET:cam1:CounterDepth", 9, "DET:cam1:StatusMessage_RBV"),
        ("DET:HDF1:Compression", "gzip", "DET:HDF1:WriteMessage"),
        ("MIC:BeamBlank", "Maybe", "MIC:StatusMessage_RBV"),
    ],
)
def test_unknown_enum_value(ca, pv, value, message_pv):
    good = ca.get(pv)
    check_refused(ca, pv, value, message_pv=message_pv, expect=[str(value), "allowed values"])
    check_cleared(ca, pv, good)


def test_capture_that_would_not_fit_the_disk(ca, sim):
    settings = {"SCAN:ShapeX": 4096, "SCAN:ShapeY": 4096, "DET:cam1:SizeX": 1024,
                "DET:cam1:SizeY": 1024, "DET:cam1:CounterDepth": "24"}  # fmt: skip
    old = {pv: ca.get(pv) for pv in settings}
    try:
        for pv, value in settings.items():
            ca.put(pv, value)
        number = ca.get("DET:HDF1:FileNumber")
        files = sorted(sim[2].iterdir())
        message = check_refused(
            ca, "DET:HDF1:Capture", 1, message_pv="DET:HDF1:WriteMessage",
            expect=["(4096, 4096)", "GB", "free"],
        )  # fmt: skip
        assert "would need" in message
        assert ca.get("DET:HDF1:Capture_RBV") == 0
        assert ca.get("DET:HDF1:FileNumber") == number
        assert sorted(sim[2].iterdir()) == files  # no file was created
    finally:
        for pv, value in reversed(old.items()):
            ca.put(pv, value)
    configure_scan(ca, shape=(2, 2), frame=16, name="fits")
    run_scan(ca)  # a capture that fits works again and clears the flag
    assert ca.alarm("DET:HDF1:Capture")[0] == AlarmStatus.NO_ALARM
    assert ca.get("STATUS") == "OK"


@pytest.mark.parametrize("bad", ["/nonexistent/bluestem", "/proc", "FILE"])
def test_file_path_missing_or_not_writable(ca, sim, bad):
    good = ca.get_str("DET:HDF1:FilePath")
    if bad == "FILE":
        bad = str(sim[2] / "a-file")
        Path(bad).write_text("not a directory")
    # /proc exists but is not writable, and is outside the data root: that is named first
    why = "outside the data root" if bad == "/proc" else "does not exist"
    check_refused(
        ca, "DET:HDF1:FilePath", bad, message_pv="DET:HDF1:WriteMessage", expect=[bad, why]
    )
    assert ca.get("DET:HDF1:FilePathExists_RBV") == 0
    assert ca.get_str("DET:HDF1:FilePath_RBV") == good
    check_cleared(ca, "DET:HDF1:FilePath", good)
    assert ca.get("DET:HDF1:FilePathExists_RBV") == 1


def test_existing_file_is_never_overwritten(ca, earlier_file):
    path, sha = earlier_file
    number = ca.get("DET:HDF1:FileNumber")
    name = ca.get_str("DET:HDF1:FileName")
    ca.put("DET:HDF1:FileName", "earlier")
    # The number the earlier file was written with ({name}_{number:06d}.h5): whatever
    # files this worker's IOC wrote before this module.
    ca.put("DET:HDF1:FileNumber", int(Path(path).stem.rsplit("_", 1)[1]))
    try:
        check_refused(ca, "DET:HDF1:Capture", 1, message_pv="DET:HDF1:WriteMessage",
                expect=["exists", "never overwritten"])  # fmt: skip
    finally:
        ca.put("DET:HDF1:FileName", name)
        ca.put("DET:HDF1:FileNumber", number)
    assert digest(path) == sha


CHANGES_DURING_ACQUISITION = [
    ("SCAN:Dwell", 7e-3, "SCAN:StatusMessage_RBV"),
    ("SCAN:ShapeX", 8, "SCAN:StatusMessage_RBV"),
    ("DET:cam1:AcquireTime", 5e-3, "DET:cam1:StatusMessage_RBV"),
    ("DET:cam1:TriggerMode", "Internal", "DET:cam1:StatusMessage_RBV"),
    ("DET:HDF1:FileName", "renamed", "DET:HDF1:WriteMessage"),
    ("MIC:HighTension", 120.0, "MIC:StatusMessage_RBV"),
    ("MIC:StageX", 3.0, "MIC:StatusMessage_RBV"),
]


def test_settings_refused_during_acquisition_but_beam_blank_works(ca):
    # 64 x 64 positions at 5 ms: ~20 s unless aborted, plenty of time for the puts.
    configure_scan(ca, shape=(64, 64), frame=16, dwell=5e-3, name="locked")
    ca.put("DET:HDF1:Capture", 1)
    path = ca.get_str("DET:HDF1:FullFileName_RBV")
    ca.put("DET:cam1:Acquire", 1)
    ca.put("SCAN:Start", 1)
    try:
        ca.wait("SCAN:State_RBV", lambda s: s == "Running", timeout=10)
        for pv, value, message_pv in CHANGES_DURING_ACQUISITION:
            message = check_refused(ca, pv, value, message_pv=message_pv, expect=["acquisition"])
            assert repr(value) in message or str(value) in message
            assert ca.alarm(pv)[1] == AlarmSeverity.MAJOR_ALARM
        ca.put("SCAN:Dwell", ca.get("SCAN:Dwell"))  # re-writing the same value is no change
        ca.put("MIC:BeamBlank", "On")  # a safety action always works
        assert ca.get("MIC:BeamBlank_RBV") == "On"
        assert ca.get("SCAN:State_RBV") == "Running"
    finally:
        ca.put("SCAN:Abort", 1)
        ca.wait_idle()
        ca.put("MIC:BeamBlank", "Off")
    for i, (pv, _, _) in enumerate(CHANGES_DURING_ACQUISITION, 1):
        value = "locked" if pv.endswith("FileName") else ca.get(pv)
        check_cleared(ca, pv, value, last=i == len(CHANGES_DURING_ACQUISITION))
    from bluestem.frames import verify_file

    assert verify_file(path).ok


def _outside_files(ca, outside: Path) -> list[Path]:
    """Run a small scan with the current settings; return what appeared ``outside``."""
    configure_scan(ca, shape=(2, 2), frame=16, name="inside")
    run_scan(ca)
    return sorted(outside.rglob("*"))


@pytest.mark.parametrize(
    "template",
    ["%.0s{outside}/%s_%6.6d.h5", "%s../%s_%6.6d.h5", "%s%s/%6.6d.h5", "%s%s_%6.6d.h5/"],
)
def test_a_template_that_formats_a_file_outside_file_path_is_refused(ca, tmp_path, template):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    template = template.format(outside=outside)
    good = ca.get_str("DET:HDF1:FileTemplate")
    message = check_refused(
        ca, "DET:HDF1:FileTemplate", template, message_pv="DET:HDF1:WriteMessage",
        expect=[template, "allowed"],
    )  # fmt: skip
    assert "FilePath" in message or "names no file" in message
    assert ca.get_str("DET:HDF1:FileTemplate_RBV") == good
    assert _outside_files(ca, outside) == []
    check_cleared(ca, "DET:HDF1:FileTemplate", good)


@pytest.mark.parametrize("case", ["relative", "absolute", "symlink", "dotdot"])
def test_a_file_path_outside_the_data_root_is_refused(ca, sim, tmp_path, case):
    data = sim[2]
    outside = tmp_path / "outside"
    outside.mkdir()
    bad = {
        "relative": "../../x",
        "absolute": str(outside),
        "symlink": str(data / "link-out"),
        "dotdot": f"{data}/../{tmp_path.name}/outside",
    }[case]
    if case == "symlink":
        (data / "link-out").symlink_to(outside, target_is_directory=True)
    why = "relative path" if case == "relative" else "outside the data root"
    expect = [bad, why, os.path.realpath(data)]
    good = ca.get_str("DET:HDF1:FilePath")
    check_refused(ca, "DET:HDF1:FilePath", bad, message_pv="DET:HDF1:WriteMessage", expect=expect)
    assert ca.get_str("DET:HDF1:FilePath_RBV") == good
    assert _outside_files(ca, outside) == []
    check_cleared(ca, "DET:HDF1:FilePath", good)


def test_a_subdirectory_of_the_data_root_is_allowed(ca, sim):
    sub = sim[2] / "session-7"
    sub.mkdir(exist_ok=True)
    good = ca.get_str("DET:HDF1:FilePath")
    try:
        ca.put("DET:HDF1:FilePath", str(sub))
        configure_scan(ca, shape=(2, 2), frame=16, name="in-sub")
        path = run_scan(ca)
    finally:
        ca.put("DET:HDF1:FilePath", good)
    assert Path(path).parent == sub
    from bluestem.frames import verify_file

    assert verify_file(path).ok


@pytest.mark.parametrize(
    "name, expect",
    [
        ("a/b", ["a/b", "not a file name stem"]),
        ("..", ["..", "not a file name stem"]),
        ("../../etc/x", ["../../etc/x", "not a file name stem"]),
        ("tab\there", ["control character", "allowed"]),
        ("n" * 250, ["250 bytes", "at most 200 bytes"]),
        ("n" * 5000, ["5000 bytes", "at most 200 bytes"]),  # accepted before
    ],
)
def test_a_file_name_that_is_not_a_short_stem_is_refused(ca, sim, tmp_path, name, expect):
    before = sorted(p.name for p in sim[2].iterdir())
    good = ca.get_str("DET:HDF1:FileName")
    check_refused(ca, "DET:HDF1:FileName", name, message_pv="DET:HDF1:WriteMessage", expect=expect)
    assert ca.get_str("DET:HDF1:FileName_RBV") == good
    assert sorted(p.name for p in sim[2].iterdir()) == before  # nothing written meanwhile
    check_cleared(ca, "DET:HDF1:FileName", good)
