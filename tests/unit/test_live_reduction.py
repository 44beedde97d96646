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
    blocks = live._run["blocks"]
    assert [(a, b) for _, a, b in blocks.missing] == [(3, 4)]
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
