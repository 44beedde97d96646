"""Specimen thickness by PACBED: a small raster, its position-averaged CBED pattern fitted
to a multislice library computed at the instrument's read-back settings, on the record
as a closed loop (docs/loop.md, "PACBED thickness").

Nothing here loads numba at import: the twin (the library) and the frame reader are
imported when a loop runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import bluesky.plan_stubs as bps
from bluesky.utils import MsgGenerator

from bluestem.instrument import angle_per_pixel
from bluestem.loop.pacbed_fit import PacbedThicknessAgent, fit_pacbed

from .loop import closed_loop, run_documents
from .raster import raster
from .validation import check_dwell, check_pair, check_shape

__all__ = ["DEFAULT_THICKNESS_RANGE", "library_for", "pacbed_thickness"]

#: The default library: every slice of the model between these thicknesses (m).
DEFAULT_THICKNESS_RANGE = (2e-9, 60e-9)
#: Allowed library thicknesses (m), entries and positions per cell edge.
THICKNESS_LIMITS = (1e-10, 1e-6)
MAX_ENTRIES = 2000
CACHE_FORMAT = "bluestem-pacbed-library-1"
#: Most pixels a side of the patterns kept in the record (binned to fit).
THUMBNAIL = 64
_MEMORY: dict[str, Any] = {}  # key -> PacbedLibrary, this process
_MEMORY_LOCK = threading.Lock()


def _specimen(specimen):
    from bluestem.twin import Specimen, make_specimen

    if isinstance(specimen, Specimen):
        return specimen
    if not isinstance(specimen, str):
        raise ValueError(f"specimen={specimen!r}: allowed a specimen name (e.g. 'srtio3') "
                         "or a bluestem.twin.Specimen")  # fmt: skip
    return make_specimen(specimen)


def _thicknesses(thicknesses, specimen) -> list[float]:
    if thicknesses is None:
        dz = specimen.slice_stack(1e-9).thickness
        low, high = DEFAULT_THICKNESS_RANGE
        return [n * dz for n in range(math.ceil(low / dz), math.floor(high / dz) + 1)]
    low, high = THICKNESS_LIMITS
    form = (f"allowed 3..{MAX_ENTRIES} ascending thicknesses in m, each {low:g}..{high:g} m "
            "(SI units: 20e-9 is 20 nm)")  # fmt: skip
    try:
        values = [float(v) for v in thicknesses]
    except (TypeError, ValueError):
        raise ValueError(f"thicknesses={thicknesses!r}: {form}") from None
    if not (3 <= len(values) <= MAX_ENTRIES) or any(
        not (math.isfinite(v) and low <= v <= high) for v in values
    ) or any(b <= a for a, b in itertools.pairwise(values)):  # fmt: skip
        raise ValueError(f"thicknesses={thicknesses!r}: {form}")
    return values


def _models(start: Mapping[str, Any]):
    """Optics and detector (the twin's, SI) from a raster's start document (read back)."""
    from bluestem.twin import DetectorModel, Optics

    mic, det = start.get("microscope") or {}, start.get("detector") or {}
    try:
        optics = Optics(
            high_tension=float(mic["high_tension"]) * 1e3,
            convergence_semi_angle=float(mic["convergence_angle"]) * 1e-3,
            defocus=float(mic.get("defocus", 0.0)) * 1e-9,
            astigmatism=float(mic.get("astigmatism", 0.0)) * 1e-9,
            astigmatism_angle=math.radians(float(mic.get("astigmatism_angle", 0.0))),
            cs=float(mic.get("cs", 0.0)) * 1e-3,
        )
        detector = DetectorModel(
            shape=(int(det["cam_size_y"]), int(det["cam_size_x"])),
            pixel_size=float(det["pixel_size"]),
            camera_length=float(mic["camera_length"]) * 1e-3,
            counter_depth=24,  # the library is noiseless
            binning=int(det["cam_bin_x"]),
        )
    except KeyError as exc:
        raise ValueError(f"the raster's start document lacks the read-back {exc} (a "
                         "microscope is needed: microscope=mic)") from None  # fmt: skip
    return optics, detector


def _key(optics, detector, specimen, thicknesses, positions) -> tuple[str, dict]:
    from dataclasses import asdict

    from bluestem import __version__

    params = {
        "format": CACHE_FORMAT, "bluestem": __version__, "optics": asdict(optics),
        "detector": {"shape": list(detector.shape), "pixel_size": detector.pixel_size,
                     "camera_length": detector.camera_length, "binning": detector.binning},
        "specimen": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in specimen.parameters().items()},
        "thicknesses": [float(t) for t in thicknesses], "positions": positions,
    }  # fmt: skip
    text = json.dumps(params, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20], params


def library_for(optics, detector, specimen, thicknesses, *, positions: int = 8,
                cache_dir: str | os.PathLike | None = None):  # fmt: skip
    """A :class:`bluestem.twin.PacbedLibrary`, from this process's memory, from
    ``cache_dir`` (``pacbed-<key>.npz``, the key a hash of every parameter and the
    bluestem version) or computed by :func:`bluestem.twin.pacbed_library` (and stored).

    Returns ``(library, cache)``: ``cache`` says where it came from (``memory``, ``disk``
    or ``computed``), its key, file and the seconds it took.
    """
    import numpy as np

    from bluestem.twin import PacbedLibrary, pacbed_library

    t0 = time.perf_counter()
    key, _ = _key(optics, detector, specimen, thicknesses, positions)
    path = os.path.join(os.fspath(cache_dir), f"pacbed-{key}.npz") if cache_dir else ""
    with _MEMORY_LOCK:
        lib = _MEMORY.get(key)
    source = "memory"
    if lib is None and path and os.path.exists(path):
        with np.load(path) as z:
            lib = PacbedLibrary(thicknesses=z["thicknesses"], requested=z["requested"],
                                patterns=z["patterns"], positions=z["positions"],
                                record=json.loads(str(z["record"])))  # fmt: skip
        source = "disk"
    if lib is None:
        lib = pacbed_library(optics, detector, specimen, thicknesses, positions=positions)
        source = "computed"
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp.npz"
            np.savez(tmp, thicknesses=lib.thicknesses, requested=lib.requested,
                     patterns=lib.patterns, positions=lib.positions,
                     record=json.dumps(lib.record, sort_keys=True))  # fmt: skip
            os.replace(tmp, path)
    with _MEMORY_LOCK:
        _MEMORY.clear() if len(_MEMORY) > 8 else None
        _MEMORY[key] = lib
    return lib, {"source": source, "key": key, "file": path,
                 "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip


def _pacbed(path: str):
    """The sum of the received frames of a raw file (float64) and how many there were."""
    import numpy as np

    from bluestem.frames import FrameReader

    with FrameReader(path) as reader:
        frames = reader.read(0, reader.total)
        received = reader.received(0, reader.total).astype(bool)
    if not received.any():
        raise ValueError(f"{path}: no frame was received; nothing to fit")
    return frames[received].sum(axis=0, dtype=np.float64), int(received.sum())


def _patterns(measured, lib, fit) -> dict[str, Any]:
    """The measured pattern and the best library entry as fitted (aligned onto the
    measured detector, scaled to the same total), binned to at most ``THUMBNAIL`` pixels
    a side: what a live view of the loop draws from the record."""
    import numpy as np

    from bluestem.loop.pacbed_fit import warp

    best = warp(lib.patterns[fit.best_index], fit.alignment, measured.shape)
    best *= measured.sum() / max(float(best.sum()), 1e-300)
    b = -(-max(measured.shape) // THUMBNAIL)

    def binned(a):
        h, w = (a.shape[0] // b) * b, (a.shape[1] // b) * b
        return a[:h, :w].reshape(h // b, b, w // b, b).sum(axis=(1, 3))

    return {"measured": np.rint(binned(measured)).astype(np.int64).tolist(),
            "best": np.round(binned(best), 1).tolist(), "binning": b,
            "best_thickness": float(lib.thicknesses[fit.best_index]),
            "units": "counts per (binned) pixel"}  # fmt: skip


def _threaded(fn) -> MsgGenerator[Any]:
    """Run ``fn()`` on a worker thread while the RunEngine stays responsive (pause,
    abort) by sleeping in short steps; returns its result or raises its error."""
    with ThreadPoolExecutor(1, thread_name_prefix="pacbed") as pool:
        future = pool.submit(fn)
        while not future.done():
            yield from bps.sleep(0.05)
        return future.result()


def _check_library(library, optics, detector, frame_shape) -> None:
    """A given library must have been computed for the instrument as read back."""
    rec = library.parameters()
    want = {"high_tension": optics.high_tension,
            "convergence_semi_angle": optics.convergence_semi_angle}  # fmt: skip
    bad = [f"{k} {rec['optics'][k]:g} (read back {v:g})" for k, v in want.items()
           if not math.isclose(rec["optics"][k], v, rel_tol=1e-3)]  # fmt: skip
    if not math.isclose(rec["angle_per_pixel"], detector.angle_per_pixel, rel_tol=1e-3):
        bad.append(f"angle per pixel {rec['angle_per_pixel']:g} rad "
                   f"(read back {detector.angle_per_pixel:g})")  # fmt: skip
    if tuple(library.patterns.shape[1:]) != tuple(frame_shape):
        bad.append(f"pattern shape {tuple(library.patterns.shape[1:])} (frames "
                   f"{tuple(frame_shape)})")  # fmt: skip
    if bad:
        raise ValueError("library= was computed for another instrument state: "
                         + "; ".join(bad))  # fmt: skip


def pacbed_thickness(
    det,
    scan,
    mic,
    *,
    shape: Sequence[int] = (8, 8),
    fov: float | Sequence[float] | None = None,
    dwell: float = 1e-3,
    thicknesses: Sequence[float] | None = None,
    specimen: Any = "srtio3",
    positions: int = 8,
    library: Any = None,
    cache_dir: str | os.PathLike | None = None,
    max_iterations: int = 3,
    reductions: Any = None,
    md: dict | None = None,
) -> MsgGenerator[Any]:
    """Measure the specimen thickness by PACBED, as a closed loop (one umbrella run).

    Each iteration rasters ``shape`` positions over ``fov`` (default: one unit cell of
    the specimen model, e.g. 0.3905 nm of SrTiO3: the 8 x 8 default steps a / 8), sums
    the received frames of its raw file (the PACBED), simulates (or reuses) a library at
    the read-back high tension, convergence angle, aberrations, camera length (angle per
    pixel, :func:`bluestem.instrument.angle_per_pixel`) and detector size and binning,
    and fits it (:func:`bluestem.loop.pacbed_fit.fit_pacbed`). The agent
    (:class:`~bluestem.loop.pacbed_fit.PacbedThicknessAgent`) converges after one fit,
    or moves the library beyond its edge and measures again when the best entry lies
    at the library's first or last thickness. It changes no setting (``restore=False``).

    Parameters
    ----------
    det, scan, mic : devices
        The pixelated detector, scan generator and microscope.
    shape : (ny, nx)
        Scan positions, 2..256 each (default 8 x 8).
    fov : float or (y, x), optional
        Field of view in nm, at least one unit cell and at most 1000 nm.
    dwell : float
        s per position, 0 < dwell <= 1 (default 1 ms: 62,000 electrons a frame at 10 pA).
    thicknesses : sequence of float, optional
        The first library's thicknesses in m (3..2000, ascending, each 1e-10..1e-6 m);
        default every slice of the model from 2 to 60 nm (0.195 nm for SrTiO3).
    specimen : str or bluestem.twin.Specimen
        The model of the specimen (default ``"srtio3"``, [001]).
    positions : int
        The library averages p x p probe positions over the unit cell, 1..32 (default 8).
    library : bluestem.twin.PacbedLibrary, optional
        Use this library in the first iteration (checked against the read-back state).
    cache_dir : str, optional
        Directory of the libraries on disk (e.g. the session's data/cache); none: this
        process's memory only.
    max_iterations : int
        1..5 (default 3).
    reductions, md
        Of the rasters (:func:`bluestem.plans.raster`); ``md`` also the umbrella's.

    Returns the :class:`bluestem.loop.LoopResult`; ``result.report["thickness"]`` (m).

    Raises
    ------
    ValueError
        A bad argument, before anything moves (naming the value and the allowed range).
    """
    for name, device in (("det", det), ("scan", scan), ("mic", mic)):
        if device is None or not hasattr(device, "name"):
            raise ValueError(f"{name}={device!r}: allowed the session's {name} device")
    for part in ("high_tension", "convergence_angle", "camera_length"):
        if not callable(getattr(getattr(mic, part, None), "set", None)):
            raise ValueError(f"mic={mic!r}: allowed a bluestem.devices.Microscope (it has "
                             f"no settable {part})")  # fmt: skip
    ny, nx = check_shape(shape)
    if not (2 <= ny <= 256 and 2 <= nx <= 256):
        raise ValueError(f"shape={shape!r}: allowed 2..256 positions per axis")
    dwell = check_dwell(dwell)
    model = _specimen(specimen)
    cell = getattr(model, "cell", None)
    if fov is None:
        if cell is None:
            raise ValueError(f"fov=None: specimen {model.name!r} has no unit cell; give "
                             "fov= in nm")  # fmt: skip
        fov = (cell[0] * 1e9, cell[1] * 1e9)
    fov = check_pair("fov", fov, low=0.0, high=1000.0)
    if cell is not None and any(f < c * 1e9 * (1 - 1e-6) for f, c in zip(fov, cell, strict=True)):
        raise ValueError(f"fov={fov!r} nm: allowed at least one unit cell "
                         f"({cell[0] * 1e9:g} x {cell[1] * 1e9:g} nm) up to 1000 nm")  # fmt: skip
    first = _thicknesses(thicknesses, model)
    if isinstance(positions, bool) or not isinstance(positions, int) or not 1 <= positions <= 32:
        raise ValueError(f"positions={positions!r}: allowed an integer 1..32")
    if library is not None and not all(hasattr(library, a) for a in
                                       ("patterns", "thicknesses", "parameters")):  # fmt: skip
        raise ValueError(f"library={library!r}: allowed a bluestem.twin.PacbedLibrary or None")
    if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
        raise ValueError(f"cache_dir={cache_dir!r}: allowed a directory path or None")
    if cache_dir is not None and os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        raise ValueError(f"cache_dir={cache_dir!r}: exists and is not a directory")
    if isinstance(max_iterations, bool) or max_iterations not in range(1, 6):
        raise ValueError(f"max_iterations={max_iterations!r}: allowed an integer 1..5")
    if md is not None and not isinstance(md, Mapping):
        raise ValueError(f"md={md!r}: allowed a mapping or None")
    agent = PacbedThicknessAgent(first)
    given = {"library": library}

    def acquire(readback, iteration, loop_md):
        plan = raster(det, scan, shape=(ny, nx), fov=fov, dwell=dwell, microscope=mic,
                      reductions=reductions,
                      md={**(md or {}), **loop_md, "purpose": "pacbed thickness"})  # fmt: skip
        uid, runs = yield from run_documents(plan)
        docs = runs[uid]
        start = docs[0][1]
        (uri,) = {d["uri"] for n, d in docs if n == "stream_resource"}
        path = urlparse(uri).path if uri.startswith("file:") else uri
        optics, detector = _models(start)

        def analyse():
            measured, frames = _pacbed(path)
            lib, cache = given.pop("library", None), {"source": "given"}
            if lib is not None:
                _check_library(lib, optics, detector, measured.shape)
            else:
                lib, cache = library_for(optics, detector, model, agent.library_thicknesses(),
                                         positions=positions, cache_dir=cache_dir)  # fmt: skip
            t0 = time.perf_counter()
            fit = fit_pacbed(
                measured,
                lib.patterns,
                lib.thicknesses,
                slice_thickness=float(lib.record.get("slice_thickness", 0.0)),
            )
            seconds = time.perf_counter() - t0
            return measured, frames, lib, cache, fit, seconds, _patterns(measured, lib, fit)

        measured, frames, lib, cache, fit, seconds, patterns = yield from _threaded(analyse)
        apx = angle_per_pixel(detector.pixel_size, detector.camera_length, detector.binning)
        return uid, {
            "method": "PACBED library fit (LeBeau et al. 2010)",
            "parameters": {"shape": [ny, nx], "fov_nm": list(fov), "dwell": dwell,
                           "file": path, "frames": frames, "counts": float(measured.sum()),
                           "angle_per_pixel": apx, "fit_seconds": round(seconds, 3)},
            "model": {"library": lib.parameters(), "cache": cache},
            "values": {"thickness": fit.thickness},
            "uncertainties": {"thickness": fit.uncertainty},
            "fit": fit.to_json(),
            "alignment": fit.alignment.to_json(),
            "patterns": patterns,
        }  # fmt: skip

    settings = {"mic_high_tension": mic.high_tension,
                "mic_convergence_angle": mic.convergence_angle,
                "mic_camera_length": mic.camera_length}  # fmt: skip
    return closed_loop(
        agent, acquire, settings=settings, max_iterations=max_iterations,
        converged=lambda report: bool(report.get("converged")), restore=False,
        goal={"quantity": "specimen thickness", "units": "m", "method": "PACBED",
              "specimen": model.name},
        md={**(md or {}), "pacbed": {"shape": [ny, nx], "fov_nm": list(fov), "dwell": dwell,
                                     "positions": positions, "cache_dir": os.fspath(cache_dir)
                                     if cache_dir is not None else None}},
    )  # fmt: skip
