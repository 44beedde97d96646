"""Shared helpers for the pipeline, control-latency and Tiled-read benchmarks.

Everything runs on 127.0.0.1: a ``bluestem ioc sim`` subprocess (Channel Access on private
ports), optionally a ``bluestem serve`` subprocess, classic ophyd devices on caproto's
client and a RunEngine whose documents go to a ResilientTiledWriter. Every process is
stopped by PID when the :class:`Bench` context exits.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

import numpy as np


def ms_stats(seconds) -> dict:
    """Median, p99, min, max and mean in ms of a sequence of durations in s."""
    ms = np.asarray(seconds, dtype=float) * 1e3
    return {
        "median": float(np.median(ms)),
        "p99": float(np.percentile(ms, 99)),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
    }


class Bench:
    """IOC (+ catalogue server) + devices + RunEngine, torn down by PID on exit.

    Parameters
    ----------
    work : Path
        Working directory; raw frames go to ``work/raw``, the catalogue to ``work/cat``.
    catalog : bool
        Start a ``bluestem serve`` and subscribe a ResilientTiledWriter to the RunEngine.
    ioc_args : list of str
        Extra ``bluestem ioc sim`` options (``--max-rate`` is always given).
    """

    def __init__(self, work: Path, *, catalog: bool = True, ioc_args=()):
        self.work = Path(work)
        self.raw = self.work / "raw"
        self.raw.mkdir(parents=True, exist_ok=True)
        self.want_catalog = catalog
        self.ioc_args = list(ioc_args)
        self.ioc = self.server = self.writer = self.RE = None
        self.mic = self.scan = self.det = None

    def __enter__(self) -> Bench:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        from bluestem.procs import start_ioc

        self.ioc = start_ioc(
            args=["--data-dir", str(self.raw), "--max-rate", *self.ioc_args],
            log_path=self.work / "ioc.log",
            timeout=90,
        )
        os.environ.update(self.ioc.env)  # before any CA client context exists
        import ophyd

        ophyd.set_cl("caproto")
        from bluestem.devices import Microscope, PixelatedDetector, ScanGenerator

        p = self.ioc.prefix
        self.mic = Microscope(p + "MIC:", name="mic")
        self.scan = ScanGenerator(p + "SCAN:", name="scan")
        self.det = PixelatedDetector(p + "DET:", name="det", root_path=str(self.raw))
        for d in (self.mic, self.scan, self.det):
            d.wait_for_connection(timeout=30)

        from bluesky import RunEngine

        self.RE = RunEngine({}, call_returns_result=True)
        if self.want_catalog:
            from tiled.client import from_uri

            from bluestem.callbacks import ResilientTiledWriter
            from bluestem.catalog import start_server

            self.server = start_server(
                self.work / "cat", api_key=secrets.token_hex(16), raw_dirs=[self.raw]
            )
            uri, key = self.server.uri, self.server.api_key
            self.writer = ResilientTiledWriter(lambda: from_uri(uri, api_key=key))
            self.RE.subscribe(self.writer)

    def set_frame(self, size: int, depth: str = "12") -> None:
        """Detector frame size (size x size, binning 1) and counter depth, verified."""
        cam = self.det.cam
        cam.bin_x.set(1).wait(10)
        cam.bin_y.set(1).wait(10)
        cam.size_x.set(size).wait(10)
        cam.size_y.set(size).wait(10)
        cam.counter_depth.set(depth).wait(10)

    def client(self):
        from tiled.client import from_uri

        return from_uri(self.server.uri, api_key=self.server.api_key)

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close(30)
            except Exception as exc:  # teardown goes on: the processes must stop
                print(f"warning: catalogue writer close failed: {exc!r}")
        for d in (self.mic, self.scan, self.det):
            if d is not None:
                with contextlib.suppress(Exception):  # teardown goes on regardless
                    d.destroy()
        if self.server is not None:
            self.server.stop()
        if self.ioc is not None:
            self.ioc.stop()


def writer_only(path: str, work: Path, scan_shape, rows_in_memory: int = 32):
    """FrameWriter alone, fed from memory with rows of ``path``'s frames.

    Same scan shape, frame shape, dtype and FrameWriter defaults as the IOC; returns
    (frames/s, seconds). The approach of ``ioc_acquire.py``: a fresh array per submit
    (ownership passes to the writer), the file removed afterwards.
    """
    import h5py

    from bluestem.frames import FRAMES_PATH, FrameWriter

    ny, nx = scan_shape
    with h5py.File(path, "r") as f:
        data = f[FRAMES_PATH]
        rows = data[: min(ny, rows_in_memory)]
        frame_shape, dtype = data.shape[2:], data.dtype
    target = Path(work) / f"writer_only-{secrets.token_hex(4)}.h5"
    writer = FrameWriter(target, scan_shape=(ny, nx), frame_shape=frame_shape, dtype=dtype)
    os.sync()  # start with no one else's dirty pages to write back
    t0 = time.perf_counter()
    writer.open()
    for row in range(ny):
        writer.submit(row * nx, np.array(rows[row % len(rows)]))
    summary = writer.close()
    seconds = time.perf_counter() - t0
    target.unlink()
    return summary.frames_written / seconds, seconds


def file_path(uri: str) -> str:
    """Local path of a StreamResource ``file://localhost/...`` URI."""
    prefix = "file://localhost"
    return uri[len(prefix) :] if uri.startswith(prefix) else uri
