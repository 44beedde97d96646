"""LiveReduction over a real raw file written by FrameWriter and hand-composed documents.

The documents are what the detector device emits (StreamResource, a StreamDatum per block
of rows); the images are compared with an independent float64 numpy computation from the
file, the dropped frame must stay NaN, a late frame must arrive, and the result must not
depend on how the rows were announced.
"""

from __future__ import annotations

import event_model
import numpy as np
import pytest
from corrupt import flip_in_chunk
from event_model import ComposeStreamResource, StreamRange

from bluestem.callbacks import LiveReduction
from bluestem.frames import FRAMES_PATH, FrameWriter
from bluestem.reduce import ReductionSpec

NY, NX, K = 6, 8, 16


def write_raw(path, *, drop=()):
    """A raw file of Poisson frames; ``drop`` never submitted."""
    rng = np.random.default_rng(7)
    frames = rng.poisson(5.0, size=(NY * NX, K, K)).astype(np.uint16)
    frames[:, 6:10, 6:10] += rng.poisson(40.0, size=(NY * NX, 4, 4)).astype(np.uint16)
    writer = FrameWriter(path, scan_shape=(NY, NX), frame_shape=(K, K), dtype=np.uint16)
    writer.open()
    for i in range(NY * NX):
        if i not in drop:
            writer.submit(i, frames[i : i + 1].copy())
    writer.close()
    return frames


def documents(path, spec, blocks):
    """start, descriptor, stream_resource, one stream_datum per (start, stop) row block,
    stop: as the PixelatedDetector and the raster plan emit them."""
    run = event_model.compose_run(
        metadata={"scan": {"shape": [NY, NX]}, "reduction": spec.to_dict(), "sample": "s1"}
    )
    key = {"source": "test", "dtype": "array", "shape": [NX, K, K], "external": "STREAM:",
           "dtype_numpy": "<u2"}  # fmt: skip
    desc = run.compose_descriptor(name="primary", data_keys={"det_image": key})
    bundle = ComposeStreamResource()(
        mimetype="application/x-hdf5",
        uri=f"file://localhost{path}",
        data_key="det_image",
        parameters={"dataset": FRAMES_PATH, "chunk_shape": [1, NX, K, K]},
    )
    docs = [("start", run.start_doc), ("descriptor", desc.descriptor_doc),
            ("stream_resource", bundle.stream_resource_doc)]  # fmt: skip
    for a, b in blocks:
        datum = bundle.compose_stream_datum(indices=StreamRange(start=a, stop=b))
        datum["descriptor"] = desc.descriptor_doc["uid"]
        datum["seq_nums"] = {"start": a + 1, "stop": b + 1}
        docs.append(("stream_datum", datum))
    docs.append(("stop", run.compose_stop()))
    return docs


def replay(docs, **kw):
    out = []
    live = LiveReduction([lambda name, doc: out.append((name, doc))], **kw)
    for name, doc in docs:
        live(name, doc)
    return live, out


def numpy_images(frames, spec):
    """Independent float64 reference: each mask's weighted sum, COM about the centre."""
    f = frames.astype(np.float64).reshape(NY * NX, K, K)
    images = {}
    for name, mask in spec.masks().items():
        images[name] = np.einsum("nij,ij->n", f, mask.astype(np.float64)).reshape(NY, NX)
    yy, xx = np.indices((K, K), dtype=np.float64)
    total = f.sum(axis=(1, 2))
    cy, cx = spec.centre
    images["com_y"] = ((f * (yy - cy)).sum(axis=(1, 2)) / total).reshape(NY, NX)
    images["com_x"] = ((f * (xx - cx)).sum(axis=(1, 2)) / total).reshape(NY, NX)
    return images


@pytest.fixture
def spec():
    return ReductionSpec.default((K, K), bf_radius=3.0, adf=(4.0, 7.5))


def test_derived_run_holds_the_images_of_every_frame_and_nan_for_the_dropped(tmp_path, spec):
    path = str(tmp_path / "raw.h5")
    frames = write_raw(path, drop=[9])
    live, out = replay(documents(path, spec, [(0, 2), (2, 5), (5, 6)]))
    names = [n for n, _ in out]
    assert names == ["start", "descriptor", "event", "stop"]
    start, event = out[0][1], out[2][1]
    parent = documents(path, spec, [])[0][1]
    assert start["parent_uid"] != start["uid"] and start["reduction"] == spec.to_dict()
    assert start["reduction_digest"] == spec.digest()
    expected = numpy_images(frames, spec)
    for name, ref in expected.items():
        got = np.asarray(event["data"][name])
        assert got.shape == (NY, NX)
        assert np.isnan(got[1, 1]), f"{name}: the dropped frame must not be reduced"
        ref[1, 1] = np.nan
        scale = np.nanmax(np.abs(ref)) or 1.0
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * scale, equal_nan=True)
    assert len(live.lags) == 3 and all(lag >= 0 for lag in live.lags)
    assert event_model.schema_validators[event_model.DocumentNames.start].validate(start) is None
    assert parent["uid"] != start["uid"]


def test_the_images_do_not_depend_on_how_rows_were_announced(tmp_path, spec):
    path = str(tmp_path / "raw.h5")
    write_raw(path)
    _, one = replay(documents(path, spec, [(0, 6)]))
    _, many = replay(documents(path, spec, [(0, 1), (1, 2), (2, 3), (3, 6)]))
    a, b = one[2][1]["data"], many[2][1]["data"]
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name]), equal_nan=True), name


def test_a_late_frame_is_reduced_at_the_stop(tmp_path, spec):
    """Frame 3 is still missing when its row is read (SWMR, writer open), arrives
    before the stop document, and is in the images: never NaN, never zeros."""
    import time

    path = str(tmp_path / "raw.h5")
    rng = np.random.default_rng(3)
    frames = rng.poisson(9.0, size=(NY * NX, K, K)).astype(np.uint16)
    writer = FrameWriter(path, scan_shape=(NY, NX), frame_shape=(K, K), dtype=np.uint16)
    writer.open()
    for i in range(NY * NX):
        if i != 3:
            writer.submit(i, frames[i : i + 1].copy())
    deadline = time.monotonic() + 20
    while writer.num_written < NY * NX - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    docs = documents(path, spec, [(0, 6)])
    out = []
    live = LiveReduction([lambda name, doc: out.append((name, doc))])
    for name, doc in docs[:-1]:
        live(name, doc)
    while not live.lags and time.monotonic() < deadline:
        time.sleep(0.01)
    executor = live._run.executor
    assert [(a, b) for _, a, b in executor.missing] == [(3, 4)]
    writer.submit(3, frames[3:4].copy())
    writer.close()
    live(*docs[-1])
    bf = np.asarray(out[2][1]["data"]["bf"])
    ref = numpy_images(frames, spec)["bf"]
    assert np.isfinite(bf).all()
    np.testing.assert_allclose(bf, ref, rtol=1e-6)


def test_a_run_without_a_spec_is_left_alone_and_a_bad_spec_is_refused(tmp_path, spec, caplog):
    path = str(tmp_path / "raw.h5")
    write_raw(path)
    docs = documents(path, spec, [(0, 6)])
    plain = [(n, {k: v for k, v in d.items() if k != "reduction"} if n == "start" else d)
             for n, d in docs]  # fmt: skip
    live, out = replay(plain)
    assert out == [] and live.derived_uid is None
    bad = dict(docs[0][1], reduction={**spec.to_dict(), "frame_shape": [K, -1]})
    live, out = replay([("start", bad), *docs[1:]])
    assert out == [] and "reduction spec is refused" in caplog.text


def test_a_corrupt_chunk_fails_the_reduction_and_emits_no_derived_run(tmp_path, spec, caplog):
    path = str(tmp_path / "raw.h5")
    write_raw(path)
    flip_in_chunk(path, (2, 0, 0, 0), 100)
    live, out = replay(documents(path, spec, [(0, 6)]))
    assert out == [] and live.derived_uid is None
    assert "corrupt chunk" in caplog.text and "no derived run" in caplog.text


def _stopped(docs, **fields):
    """``docs`` with its stop document changed (``exit_status``, ``reason``)."""
    name, stop = docs[-1]
    return [*docs[:-1], (name, {**stop, **fields})]


def test_a_derived_run_ends_as_its_parent_did(tmp_path, spec):
    path = str(tmp_path / "raw.h5")
    write_raw(path)
    docs = _stopped(documents(path, spec, [(0, 6)]), exit_status="fail",
                    reason="AcquisitionError: det: lost the detector IOC")  # fmt: skip
    _, out = replay(docs)
    parent = docs[0][1]["uid"]
    stop = out[-1][1]
    assert stop["exit_status"] == "fail"
    assert stop["reason"] == (
        f"parent run {parent} ended 'fail': AcquisitionError: det: lost the detector IOC"
    )
    _, ok = replay(documents(path, spec, [(0, 6)]))
    assert ok[-1][1]["exit_status"] == "success" and not ok[-1][1].get("reason")


def test_frames_read_ahead_but_never_announced_are_not_in_the_derived_run(tmp_path, spec):
    """The run was cut off (a halt, a lost IOC) after announcing rows 0..2 while the
    live reduction had read the whole file ahead: rows 3..5 must not be in its images,
    nor in the sum pattern."""
    import time

    path = str(tmp_path / "raw.h5")
    frames = write_raw(path)
    docs = _stopped(documents(path, spec, [(0, 2), (2, 3)]), exit_status="abort",
                    reason="halted")  # fmt: skip
    out = []
    live = LiveReduction([lambda name, doc: out.append((name, doc))])
    for name, doc in docs[:-1]:
        live(name, doc)
    deadline = time.monotonic() + 20
    while live.snapshot()["frames"] < NY * NX and time.monotonic() < deadline:
        time.sleep(0.01)
    assert live.snapshot()["frames"] == NY * NX  # the whole file was reduced ahead
    live(*docs[-1])
    start, event = out[0][1], out[2][1]
    assert start["frames"] == {"reduced": 3 * NX, "announced": 3 * NX}
    bf = np.asarray(event["data"]["bf"])
    assert np.isfinite(bf[:3]).all() and np.isnan(bf[3:]).all()
    ref = numpy_images(frames, spec)["bf"]
    np.testing.assert_allclose(bf[:3], ref[:3], rtol=1e-6)
    sum_dp = np.asarray(event["data"]["sum_dp"])
    np.testing.assert_array_equal(sum_dp, frames[: 3 * NX].astype(np.float64).sum(axis=0))


def test_the_live_snapshot_after_one_row_has_no_dpc_and_raises_nothing(tmp_path, spec):
    """DPC needs a 2-D field: one reduced row gives none (it used to raise)."""
    import time

    path = str(tmp_path / "raw.h5")
    write_raw(path)
    docs = documents(path, spec, [(0, 1)])
    live = LiveReduction()
    for name, doc in docs[:3]:
        live(name, doc)
    # The file is complete: stop it from reading ahead, so one row is all there is.
    live._run.executor.follow = lambda: 0
    live(*docs[3])
    deadline = time.monotonic() + 20
    while not live.lags and time.monotonic() < deadline:
        time.sleep(0.01)
    snap = live.snapshot()
    assert snap["frames"] == NX
    assert "idpc" not in snap["images"] and np.isfinite(snap["images"]["bf"][0]).all()
    live(*docs[-1])


def test_warm_up_compiles_the_kernels_before_any_run():
    from bluestem.reduce.kernels import fused_reduce

    live = LiveReduction()
    assert live.warm_up([np.uint8]) >= 0
    assert any("uint8" in str(sig[0]) for sig in fused_reduce.signatures)
    # A descriptor announcing another frame type compiles it before the detector is armed.
    live("start", {"uid": "u", "time": 0.0, "scan": {"shape": [2, 2]},
                   "reduction": ReductionSpec.default((K, K)).to_dict()})  # fmt: skip
    key = {"source": "t", "dtype": "array", "shape": [2, K, K], "external": "STREAM:",
           "dtype_numpy": "<u4"}  # fmt: skip
    live("descriptor", {"uid": "d", "run_start": "u", "time": 0.0, "name": "primary",
                        "data_keys": {"det_image": key}})  # fmt: skip
    assert np.dtype(np.uint32) in live._warmed
    assert any("uint32" in str(sig[0]) for sig in fused_reduce.signatures)
    live("stop", {"uid": "s", "run_start": "u", "time": 0.0, "exit_status": "success"})


def test_an_executor_with_only_reduce_and_result_gives_the_same_derived_run(tmp_path, spec):
    """LiveReduction uses the executor's interface only: one without the optional
    capabilities (no following, no live images, no progress) makes the same images, and
    the live snapshot simply has no images until the end."""
    from bluestem.reduce.executors import LocalExecutor, ReductionExecutor

    class Plain(ReductionExecutor):
        def __init__(self, spec, shape):
            self.inner = LocalExecutor.for_spec(spec, shape)
            self.reduced = []

        def reduce(self, block):
            self.inner.reduce(block)
            self.reduced.append(block)

        def result(self):
            return self.inner.result()

        def close(self):
            self.inner.close()

    path = str(tmp_path / "raw.h5")
    write_raw(path, drop=[9])
    docs = documents(path, spec, [(0, 2), (2, 6)])
    made = []
    live = LiveReduction([], executor=lambda s, shape: made.append(Plain(s, shape)) or made[-1])
    out = []
    live.sinks.append(lambda name, doc: out.append((name, doc)))
    for name, doc in docs[:-1]:
        live(name, doc)
    snap = live.snapshot()
    assert snap["images"] == {} and snap["frames"] == 0
    live(*docs[-1])
    assert len(made) == 1 and [b.count for b in made[0].reduced] == [2 * NX, 4 * NX]
    _, local = replay(docs)
    a, b = out[2][1]["data"], local[2][1]["data"]
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name]), equal_nan=True), name
