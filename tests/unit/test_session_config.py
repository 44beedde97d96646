"""The session inventory: parsing, ${VAR} expansion, and bad entries refused by name."""

from __future__ import annotations

import io

import pytest

from bluestem.devices import Microscope, PixelatedDetector
from bluestem.session import build_session, expand_env, load_config

MIC = {"class": "bluestem.devices.Microscope", "prefix": "P:MIC:", "name": "mic"}
DET = {"class": "bluestem.devices.PixelatedDetector", "prefix": "P:DET:", "name": "det"}


def test_yaml_inventory_with_env_placeholders(tmp_path, monkeypatch):
    monkeypatch.setenv("BST_UNIT_PFX", "XYZ:")
    monkeypatch.setenv("BST_UNIT_KEY", "s3cret")
    path = tmp_path / "inv.yml"
    path.write_text(
        "devices:\n"
        "  - {class: bluestem.devices.Microscope, prefix: '${BST_UNIT_PFX}MIC:', name: mic}\n"
        "  - {class: bluestem.devices.PixelatedDetector, prefix: '${BST_UNIT_PFX}DET:',"
        " name: det, pixel_size: 7.5e-5}\n"
        f"data_root: {tmp_path}\n"
        "catalog: {uri: 'http://127.0.0.1:9', api_key: '${BST_UNIT_KEY}'}\n"
        "metadata: {sample: Si, operator: '${BST_UNIT_OP:-nobody}'}\n"
        "ca: {addr_list: [127.0.0.1, '127.0.0.1:5070'], auto_addr_list: false,"
        " server_port: 5064}\n"
    )
    cfg = load_config(path)
    mic, det = cfg.devices
    assert (mic.cls, mic.prefix, mic.name) == (Microscope, "XYZ:MIC:", "mic")
    assert det.cls is PixelatedDetector and det.kwargs == {
        "pixel_size": 7.5e-5, "root_path": str(tmp_path)}  # fmt: skip
    assert cfg.catalog["api_key"] == "s3cret"
    assert cfg.metadata == {"sample": "Si", "operator": "nobody"}
    assert cfg.ca == {
        "EPICS_CA_ADDR_LIST": "127.0.0.1 127.0.0.1:5070",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_SERVER_PORT": "5064",
    }


def test_expand_env_names_the_missing_variable():
    assert expand_env({"a": ["${X}-${Y:-d}"]}, "k", {"X": "1"}) == {"a": ["1-d"]}
    with pytest.raises(ValueError, match=r"k\.a\[0\]=.*BST_NOT_SET is not set"):
        expand_env({"a": ["${BST_NOT_SET}"]}, "k", {})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"devices": [MIC], "detectors": []}, r"unknown key 'detectors'; allowed: devices"),
        ({"devices": []}, r"devices=\[\]: allowed a non-empty list"),
        ({"devices": [{**MIC, "class": "bluestem.devices.Nope"}]},
         r"devices\[0\]\.class='bluestem\.devices\.Nope': cannot import"),
        ({"devices": [{**MIC, "class": "Microscope"}]},
         r"devices\[0\]\.class='Microscope': allowed a dotted class path"),
        ({"devices": [{"class": MIC["class"], "name": "mic"}]},
         r"devices\[0\]: missing key 'prefix'"),
        ({"devices": [{**MIC, "name": "my mic"}]},
         r"devices\[0\]\.name='my mic': allowed a Python identifier"),
        ({"devices": [MIC, MIC]}, r"name 'mic' used twice"),
        ({"devices": [DET]}, r"devices\[0\] \(det\): a detector needs root_path or a top-level"),
        ({"devices": [MIC], "catalog": {"uri": "ftp://x"}},
         r"catalog\.uri='ftp://x': allowed an http"),
        ({"devices": [MIC], "ca": {"addr": "1"}}, r"ca: unknown key 'addr'; allowed: addr_list"),
        ({"devices": [MIC], "baseline": ["scan"]}, r"baseline=\['scan'\]: allowed .*\['mic'\]"),
        ({"devices": [MIC], "namespace": ["bluestem.nope"]},
         r"namespace\[0\]='bluestem\.nope': cannot import it"),
        ({"devices": [MIC], "connect_timeout": 0}, r"connect_timeout=0: allowed .*\(0, 600\]"),
        ({"devices": [MIC], "live": {"images": "yes"}},
         r"live\.images='yes': allowed true, false or auto"),
        ({"devices": [MIC], "live": {"reduce": 1}}, r"live\.reduce=1: allowed true or false"),
        ({"devices": [MIC], "live": {"outdir": "x"}},
         r"live: unknown key 'outdir'; allowed: reduce, images, out_dir, verify"),
        ({"devices": [MIC], "live": ["reduce"]}, r"live=\['reduce'\]: allowed a mapping"),
        ({"devices": [MIC], "control_layer": "libca"},
         r"control_layer='libca': allowed caproto, pyepics"),
    ],
)  # fmt: skip
def test_bad_entries_are_refused_by_name(config, message):
    with pytest.raises(ValueError, match=message):
        load_config(config)
    with pytest.raises(ValueError, match=message):
        build_session(config)  # refused before anything is created


def test_progress_bar_counts_rows_from_stream_datum():
    from bluestem.callbacks.progress import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(stream=out, plain_interval=0.0)
    bar("start", {"uid": "s", "scan": {"shape": [4, 8]}})
    bar("descriptor", {"uid": "d", "data_keys": {
        "det_image": {"shape": [8, 64, 64], "external": "STREAM:"}}})  # fmt: skip
    bar("stream_datum", {"descriptor": "d", "indices": {"start": 0, "stop": 3}})
    bar("stream_datum", {"descriptor": "d", "indices": {"start": 3, "stop": 4}})
    bar("stop", {"exit_status": "success"})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("24/32 frames") and "ETA" in lines[0]
    assert lines[-1].startswith("32/32 frames") and lines[-1].endswith("[success]")
    assert "\r" not in out.getvalue()  # not a terminal: plain lines
    assert bar.summary()["frames"] == 32 and bar.dropped == 0


def test_progress_bar_takes_dropped_frames_from_the_monitor_streams_events():
    """The dropped count is the latest value of each ``*dropped_frames`` key of a
    descriptor's events (any stream), summed over the keys; other events change nothing."""
    from bluestem.callbacks.progress import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(stream=out, plain_interval=0.0)
    bar("start", {"uid": "s", "scan": {"shape": [2, 4]}})
    bar("descriptor", {"uid": "d", "name": "primary", "data_keys": {
        "det_image": {"shape": [4, 8, 8], "external": "STREAM:"}}})  # fmt: skip
    bar("descriptor", {"uid": "m1", "name": "det_hdf_dropped_frames_monitor",
                       "data_keys": {"det_hdf_dropped_frames": {"shape": []}}})  # fmt: skip
    bar("descriptor", {"uid": "m2", "name": "det2_hdf_dropped_frames_monitor",
                       "data_keys": {"det2_hdf_dropped_frames": {"shape": []}}})  # fmt: skip
    bar("descriptor", {"uid": "b", "name": "baseline",
                       "data_keys": {"mic_focus": {"shape": []}}})  # fmt: skip
    bar("stream_datum", {"descriptor": "d", "indices": {"start": 0, "stop": 1}})
    assert bar.dropped == 0
    bar("event", {"descriptor": "m1", "seq_num": 1, "data": {"det_hdf_dropped_frames": 0}})
    bar("event", {"descriptor": "m1", "seq_num": 2, "data": {"det_hdf_dropped_frames": 2}})
    bar("event", {"descriptor": "b", "seq_num": 1, "data": {"mic_focus": 7}})
    assert bar.dropped == 2
    bar("event", {"descriptor": "m1", "seq_num": 3, "data": {"det_hdf_dropped_frames": 3}})
    bar("event_page", {"descriptor": "m2", "seq_num": [1, 2],
                       "data": {"det2_hdf_dropped_frames": [1, 4]}})  # fmt: skip
    assert bar.dropped == 3 + 4  # the latest per key, summed
    bar("stream_datum", {"descriptor": "d", "indices": {"start": 1, "stop": 2}})
    bar("stop", {"exit_status": "success"})
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("8/8 frames") and "dropped 7" in lines[-1]
    assert bar.summary()["dropped"] == 7
    # A new run starts from zero: the counters are the new run's.
    bar("start", {"uid": "s2", "scan": {"shape": [1, 1]}})
    bar("event", {"descriptor": "m1", "data": {"det_hdf_dropped_frames": 9}})
    assert bar.dropped == 0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_one_line_on_a_terminal():
    from bluestem.callbacks.progress import ProgressBar

    out = _Terminal()
    bar = ProgressBar(stream=out, interval=0.0, width=10)
    bar("start", {"uid": "s", "scan": {"shape": [2, 2]}})
    bar("stream_datum", {"descriptor": "?", "indices": {"start": 0, "stop": 2}})
    bar("stop", {"exit_status": "success"})
    text = out.getvalue()
    # No descriptor seen: one frame per index; the line is redrawn in place (\r).
    first, final = text.split("\r")[1:]
    assert first.startswith("[#####-----]  50.0% 2/4 frames") and "ETA" in first
    assert final.startswith("[#####-----]  50.0% 2/4 frames") and final.endswith("[success]\n")


def test_live_defaults_and_paths(tmp_path):
    cfg = load_config({"devices": [MIC]})
    assert cfg.live == {"reduce": True, "images": "auto", "out_dir": None, "verify": True}
    cfg = load_config({"devices": [MIC], "live": {"images": False, "out_dir": str(tmp_path)}})
    assert cfg.live["images"] is False and cfg.live["out_dir"] == tmp_path


def test_the_control_layer_defaults_to_caproto_and_takes_pyepics():
    assert load_config({"devices": [MIC]}).control_layer == "caproto"
    assert load_config({"devices": [MIC], "control_layer": "pyepics"}).control_layer == "pyepics"
