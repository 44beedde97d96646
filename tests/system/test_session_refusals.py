"""build_session against the CA environment of the system tests: refusals and connections."""

from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.system

MIC = {"class": "bluestem.devices.Microscope", "prefix": "NOSUCH:MIC:", "name": "mic"}


def test_bad_yaml_entry_refused_before_any_device(tmp_path, ca_env):
    from bluestem.session import build_session

    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"devices": [{**MIC, "class": "bluestem.devices.Microsope"}]}))
    with pytest.raises(ValueError, match=r"devices\[0\]\.class='bluestem\.devices\.Microsope'"):
        build_session(path)


def test_missing_ioc_names_the_pv(ca_env):
    from bluestem.session import build_session

    config = {"devices": [MIC], "connect_timeout": 0.5, "progress": False}
    with pytest.raises(ConnectionError, match=r"device 'mic' \(Microscope, prefix 'NOSUCH:MIC:'\)"
                       r".*did not connect within 0\.5 s: NOSUCH:MIC:"):  # fmt: skip
        build_session(config)


def test_session_unconnected_builds_everything(tmp_path, ca_env):
    from bluestem.session import build_session

    config = {
        "devices": [MIC, {"class": "bluestem.devices.PixelatedDetector",
                          "prefix": "NOSUCH:DET:", "name": "det"}],
        "data_root": str(tmp_path),
        "metadata": {"sample": "Au"},
    }  # fmt: skip
    s = build_session(config, connect=False)
    try:
        assert s.mic is s.devices["mic"] and s.det.root_path.get() == str(tmp_path)
        assert s.RE.md["sample"] == "Au"
        assert list(s.callbacks) == ["journal", "progress", "live", "loop", "summary"]
        # No catalogue: derived runs go to the journal (and the after-run summary).
        assert s.live.sinks == [s.journal, s.summary]
        assert str(s.journal.path_for({"uid": "u", "time": 0.0})).startswith(
            str(tmp_path / "journal")
        )
        (pre,) = s.RE.preprocessors
        assert pre.baseline == [s.mic]
        with pytest.raises(AttributeError, match="no attribute or device 'nope'"):
            _ = s.nope
    finally:
        s.close()
    assert s.callbacks == {}
