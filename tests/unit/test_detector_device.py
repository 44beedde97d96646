"""PixelatedDetector on ophyd's fake signals (no IOC): its documents and its failures.

The counters an IOC would publish are ``sim_put`` by the test; ``fake_devices`` wires
the few putters the device waits on (``Capture`` -> ``Capture_RBV``, ``Acquire`` ->
``Acquire_RBV``).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from fake_devices import echo_capture, echo_settings, fake_detector

from bluestem.devices import (
    AcquisitionError,
    PathInfo,
    PixelatedDetector,
    PutRefused,
    ReadbackMismatch,
    UUIDPathProvider,
)
from bluestem.frames import FRAMES_PATH
from bluestem.instrument import DetectorState, ImageMode, TriggerMode, WriteStatus

NY, NX, K = 5, 4, 16
FLY_CHUNKS = (1, NX, K, K)


def _names(docs):
    return [name for name, _ in docs]


def _covered(docs) -> list[int]:
    return [i for name, d in docs if name == "stream_datum"
            for i in range(d["indices"]["start"], d["indices"]["stop"])]  # fmt: skip


@pytest.fixture
def det(tmp_path):
    det = fake_detector(tmp_path, frame_shape=(K, K))
    echo_capture(det, chunk_shape=FLY_CHUNKS)
    return det


def _fly(det, shape=(NY, NX)):
    det.prepare({"mode": "fly", "shape": shape}).wait(5)
    det.kickoff().wait(5)


def test_prepare_writes_the_providers_directory_and_name(det, tmp_path):
    det.prepare({"mode": "fly", "shape": (NY, NX)}).wait(5)
    assert det.hdf.file_path.get() == str(tmp_path)
    assert det.file_stem.startswith("det-") and det.hdf.file_name.get() == det.file_stem
    assert det.cam.trigger_mode.get() == TriggerMode.EXTERNAL
    first = det.file_stem
    det.prepare({"mode": "fly", "shape": (NY, NX)}).wait(5)
    assert det.file_stem != first  # run-scoped, never reused
    det.prepare({"mode": "fly", "shape": (NY, NX), "file_stem": "mine"}).wait(5)
    assert det.hdf.file_name.get() == "mine" and det.hdf.file_path.get() == str(tmp_path)
    det.prepare({"mode": "step", "label": "dark", "acquire_time": 2e-3}).wait(5)
    assert det.file_stem.startswith("det-dark-")
    assert det.cam.trigger_mode.get() == TriggerMode.INTERNAL
    assert det.cam.image_mode.get() == ImageMode.SINGLE
    assert det.cam.acquire_time.get() == pytest.approx(2e-3)


def test_fly_mode_announces_the_completed_rows_once(det, tmp_path):
    _fly(det)
    docs = list(det.collect_asset_docs())
    assert _names(docs) == ["stream_resource"]
    res = docs[0][1]
    path = os.path.join(str(tmp_path), f"{det.file_stem}.h5")
    assert res["uri"] == f"file://localhost{path}" and res["data_key"] == "det_image"
    assert res["mimetype"] == "application/x-hdf5"
    assert res["parameters"] == {"dataset": FRAMES_PATH, "chunk_shape": list(FLY_CHUNKS)}

    det.hdf.num_captured.sim_put(NX + 1)  # one row and a frame of the next
    docs = list(det.collect_asset_docs())
    assert _names(docs) == ["stream_datum"] and _covered(docs) == [0]
    assert docs[0][1]["stream_resource"] == res["uid"]
    assert list(det.collect_asset_docs()) == []  # nothing new, nothing announced
    det.hdf.num_captured.sim_put(2 * NX + 2)
    det.hdf.dropped_frames.sim_put(2)  # a dropped frame completes its row
    more = list(det.collect_asset_docs())
    assert _covered(more) == [1, 2] and det.get_index() == 3

    status = det.complete()
    assert not status.done  # the file is open
    det.hdf.num_captured.sim_put(3 * NX + 1)  # stopped early: 3 rows and 3 frames
    det.hdf.capture_rbv.sim_put(0)
    status.wait(5)
    final = list(det.collect_asset_docs())
    # finished: ceil((captured + dropped) / nx) rows, the partly visited last one included
    assert _covered(final) == [3]
    assert math.ceil((3 * NX + 1 + 2) / NX) == 4 == det.get_index()
    assert _covered(docs + more + final) == list(range(4))


def test_fly_descriptor_dtype_from_data_type(det):
    det.cam.data_type.sim_put("UInt32")
    _fly(det)
    (key,) = det.describe_collect().values()
    assert key["shape"] == [NX, K, K] and key["dtype_numpy"] == np.dtype(np.uint32).str
    assert key["external"] == "STREAM:" and key["dtype"] == "array"
    det.cam.data_type.sim_put("UInt8")
    assert det.describe_collect()["det_image"]["dtype_numpy"] == "|u1"


def test_step_mode_one_resource_and_one_datum_per_trigger(tmp_path):
    det = fake_detector(tmp_path, frame_shape=(K, K))
    echo_capture(det, chunk_shape=(1, K, K))
    det.prepare({"mode": "step", "acquire_time": 1e-3}).wait(5)
    stem = det.file_stem
    key = det.describe()["det_image"]
    assert key["shape"] == [K, K] and key["dtype_numpy"] == "<u2"
    seen = []
    for k in range(2):
        det.trigger().wait(5)
        docs = list(det.collect_asset_docs())
        assert _names(docs) == ["stream_resource", "stream_datum"]
        res, datum = docs[0][1], docs[1][1]
        assert res["uri"].endswith(f"/{stem}-{k:06d}.h5")
        assert res["parameters"]["chunk_shape"] == [1, K, K]
        assert datum["indices"] == {"start": 0, "stop": 1}
        assert datum["stream_resource"] == res["uid"]
        seen.append(res["uri"])
    assert len(set(seen)) == 2 and det.get_index() == 2
    assert det.hdf.num_capture.get() == 1


def test_chunk_shape_comes_from_the_pv_not_the_file(tmp_path):
    det = fake_detector(tmp_path, frame_shape=(K, K))
    echo_capture(det, chunk_shape=(1, 2, K, K))  # two frames of a row per chunk
    _fly(det)
    (res,) = [d for n, d in det.collect_asset_docs() if n == "stream_resource"]
    assert res["parameters"]["chunk_shape"] == [1, 2, K, K]
    assert not os.path.exists(res["uri"][len("file://localhost") :])  # never opened

    empty = fake_detector(tmp_path, name="det2", frame_shape=(K, K))
    echo_capture(empty, chunk_shape=(0, 0, 0, 0))
    empty.prepare({"mode": "fly", "shape": (NY, NX)}).wait(5)
    with pytest.raises(AcquisitionError, match=r"det2: FAKE:DET:HDF1:ChunkShape_RBV"):
        empty.kickoff().wait(5)


def test_padded_chunk_shape_drops_the_padding(tmp_path):
    det = fake_detector(tmp_path, frame_shape=(K, K))
    echo_capture(det, chunk_shape=(1, K, K, 0))  # a 3-D file in a 4-element waveform
    det.prepare({"mode": "step", "acquire_time": 1e-3}).wait(5)
    det.trigger().wait(5)
    (res,) = [d for n, d in det.collect_asset_docs() if n == "stream_resource"]
    assert res["parameters"]["chunk_shape"] == [1, K, K]


def test_write_error_fails_complete_with_the_writers_message(det):
    _fly(det)
    status = det.complete()
    det.hdf.write_message.sim_put("disk full writing chunk (0, 0)")
    det.hdf.write_status.sim_put(str(WriteStatus.ERROR))
    with pytest.raises(AcquisitionError, match=r"det: disk full writing chunk \(0, 0\) \(file "):
        status.wait(5)


def test_detector_error_fails_complete(det):
    _fly(det)
    status = det.complete()
    det.cam.message.sim_put("sensor over temperature")
    det.cam.detector_state.sim_put(str(DetectorState.ERROR))
    with pytest.raises(AcquisitionError, match="det: sensor over temperature"):
        status.wait(5)


def _lose(signal):
    def get(*_, **__):
        raise TimeoutError(f"{signal.pvname} could not connect within 1.0-second timeout.")

    signal.get = get


def test_a_lost_ioc_names_the_detector(det):
    _fly(det)
    list(det.collect_asset_docs())
    _lose(det.hdf.num_captured)
    with pytest.raises(AcquisitionError,
                       match=r"det: lost the detector IOC \(FAKE:DET:HDF1:NumCaptured_RBV: "
                             r"TimeoutError: .*\) while capturing to .*\.h5"):  # fmt: skip
        list(det.collect_asset_docs())
    _lose(det.hdf.capture_rbv)
    with pytest.raises(AcquisitionError, match=r"det: lost the detector IOC \(.*Capture_RBV"):
        det.complete().wait(5)


def test_a_refused_put_surfaces(tmp_path):
    det = fake_detector(tmp_path, frame_shape=(K, K))
    refused = {"FAKE:DET:HDF1:Capture": "'/data/x.h5' exists and is never overwritten"}
    echo_capture(det, chunk_shape=FLY_CHUNKS, refuse=refused)
    det.prepare({"mode": "fly", "shape": (NY, NX)}).wait(5)
    with pytest.raises(PutRefused, match=r"FAKE:DET:HDF1:Capture: '/data/x.h5' exists"):
        det.kickoff().wait(5)

    # A refused setting in prepare (VerifiedText FilePath) fails the prepare status.
    echo_settings(det, refuse={"FAKE:DET:HDF1:FilePath": "'/x' does not exist"})
    with pytest.raises(PutRefused, match=r"FAKE:DET:HDF1:FilePath: '/x' does not exist"):
        det.prepare({"mode": "fly", "shape": (NY, NX)}).wait(5)


def test_verified_text_compares_text(det, tmp_path):
    det.hdf.file_path.set(tmp_path).wait(5)  # a path is written as its text
    assert det.hdf.file_path.get() == str(tmp_path)
    assert det.hdf.file_path.tolerance_text() == "the same text"
    echo_settings(det, stuck=["FAKE:DET:HDF1:FileName"])
    det.hdf.file_name.verify_timeout = 0.1
    with pytest.raises(ReadbackMismatch, match=r"FileName: requested 'b', read back .* \(allowed "
                                               r"the same text\)"):  # fmt: skip
        det.hdf.file_name.set("b").wait(5)


def test_path_provider_is_asked_for_each_run(tmp_path):
    asked = []

    def provider(name):
        asked.append(name)
        return PathInfo(str(tmp_path), f"{name}-{len(asked)}")

    det = fake_detector(tmp_path, frame_shape=(K, K), root_path=None, path_provider=provider)
    det.prepare({"mode": "fly", "shape": (NY, NX)}).wait(5)
    det.prepare({"mode": "step", "label": "dark"}).wait(5)
    assert asked == ["det", "det-dark"] and det.file_stem == "det-dark-2"
    assert det.root_path.get() == str(tmp_path)

    with pytest.raises(ValueError, match="allowed one of them"):
        PixelatedDetector("X:", name="d", root_path=tmp_path, path_provider=provider)
    with pytest.raises(ValueError, match="allowed one of them"):
        PixelatedDetector("X:", name="d")
    bad = fake_detector(tmp_path, name="bad", root_path=None, path_provider=lambda n: "x")
    with pytest.raises(ValueError, match="answered 'x'; allowed a PathInfo"):
        bad.prepare({"mode": "fly", "shape": (NY, NX)})


def test_uuid_path_provider():
    p = UUIDPathProvider("/data/raw/")
    a, b = p("det"), p("det")
    assert a.directory == "/data/raw" and a.filename.startswith("det-") and a != b
    assert len(a.filename) == len("det-") + 36
    with pytest.raises(ValueError, match="root=''"):
        UUIDPathProvider("")
