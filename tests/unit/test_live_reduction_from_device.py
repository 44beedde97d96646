"""LiveReduction fed by the detector device's own documents, no IOC.

A fly raster runs on fake devices (``fake_devices``): the in-process IOC writes a real raw
file with ``bluestem.frames.FrameWriter`` as the real one does, the fake
PixelatedDetector announces it (StreamResource with the chunk shape from
``ChunkShape_RBV``, StreamDatum documents per block of rows), and the RunEngine hands
every document to ``LiveReduction(sinks=[...])``. Its derived images are compared with an
independent float64 numpy computation on the frames the IOC was given.
"""

from __future__ import annotations

import numpy as np
from fake_ioc import fake_instrument

from bluestem.callbacks import LiveReduction
from bluestem.reduce import ReductionSpec

NY, NX, K = 5, 7, 16
DROPPED = 9  # scan position (1, 2): never delivered


def frames_of_the_sample() -> np.ndarray:
    """Poisson background, a bright disc that moves with the scan (a COM signal)."""
    rng = np.random.default_rng(11)
    frames = rng.poisson(3.0, size=(NY * NX, K, K)).astype(np.float64)
    yy, xx = np.indices((K, K))
    for i in range(NY * NX):
        cy, cx = 7.5 + (i % NX - NX / 2) * 0.4, 7.5 + (i // NX - NY / 2) * 0.3
        frames[i] += 60.0 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 3.0**2)
    return frames.astype(np.uint16)


def reference(frames: np.ndarray, spec: ReductionSpec) -> dict[str, np.ndarray]:
    """Bright field (the mask's weighted sum) and centre of mass about the spec's centre,
    in float64; the dropped position NaN."""
    f = frames.astype(np.float64)
    bf = np.einsum("nij,ij->n", f, spec.masks()["bf"].astype(np.float64))
    yy, xx = np.indices((K, K), dtype=np.float64)
    total = f.sum(axis=(1, 2))
    cy, cx = spec.centre
    out = {
        "bf": bf,
        "com_y": (f * (yy - cy)).sum(axis=(1, 2)) / total,
        "com_x": (f * (xx - cx)).sum(axis=(1, 2)) / total,
    }
    for image in out.values():
        image[DROPPED] = np.nan
    return {name: image.reshape(NY, NX) for name, image in out.items()}


def test_live_images_from_the_devices_documents(tmp_path):
    from bluesky import RunEngine

    from bluestem.plans import raster

    frames = frames_of_the_sample()
    _, det, scan, mic = fake_instrument(tmp_path, frame_shape=(K, K), frames=frames,
                                        drop=[DROPPED])  # fmt: skip
    spec = ReductionSpec.default((K, K), bf_radius=3.0, adf=(4.0, 7.5))
    derived: list[tuple[str, dict]] = []
    raw: list[tuple[str, dict]] = []
    live = LiveReduction(sinks=[lambda name, doc: derived.append((name, doc))])
    RE = RunEngine({})
    RE.subscribe(lambda name, doc: raw.append((name, doc)))
    RE.subscribe(live)
    (uid,) = RE(raster(det, scan, shape=(NY, NX), dwell=1e-3, microscope=mic, reductions=spec))

    # The documents are the device's: one resource, chunked as the IOC's file.
    (res,) = [d for n, d in raw if n == "stream_resource"]
    assert res["parameters"]["chunk_shape"][-2:] == [K, K]
    covered = [i for n, d in raw if n == "stream_datum"
               for i in range(d["indices"]["start"], d["indices"]["stop"])]  # fmt: skip
    assert covered == list(range(NY))

    names = [n for n, _ in derived]
    assert names == ["start", "descriptor", "event", "stop"]
    start, event = derived[0][1], derived[2][1]
    assert start["parent_uid"] == uid and start["reduction"] == spec.to_dict()
    expected = reference(frames, spec)
    for name, ref in expected.items():
        got = np.asarray(event["data"][name], dtype=np.float64)
        assert got.shape == (NY, NX), name
        assert np.isnan(got[DROPPED // NX, DROPPED % NX]), f"{name}: the dropped frame"
        scale = np.nanmax(np.abs(ref)) or 1.0
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * scale, equal_nan=True)
    # The COM moves with the disc: the images are not trivially flat.
    assert np.nanstd(expected["com_x"]) > 0.1 and np.nanstd(expected["bf"]) > 0
    assert derived[3][1]["exit_status"] == "success"
