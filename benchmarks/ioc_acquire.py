"""Benchmark: a whole acquisition through the sim IOC at --max-rate.

Settings put, HDF1:Capture, cam1:Acquire, SCAN:Start, wait for NumCaptured: a 256 x 256
scan of 128 x 128 uint16 frames (2 GiB).  While it runs, the put latency of a harmless PV
(MIC:StageX, written with its current value: accepted, it changes nothing) is measured
from a CA client.  Baseline, in the same run: the writer alone (FrameWriter fed from
memory with rows of the same file) at the same shape, dtype and chunking.

Last line: one JSON object with fps, dropped, file, put_ms_p50, put_ms_p99,
baseline_fps and ratio = IOC fps / writer-only fps.

Usage: python benchmarks/ioc_acquire.py [--shape NY NX] [--frame K] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import writer_only


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=2, type=int, default=(256, 256))
    parser.add_argument("--frame", type=int, default=128)
    parser.add_argument("--dir", default=None, help="data directory (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    args = parser.parse_args()
    ny, nx = args.shape
    total = ny * nx
    work = Path(args.dir or tempfile.mkdtemp(prefix="bluestem-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    from bluestem.procs import start_ioc

    os.sync()  # both runs start with no one else's dirty pages to write back
    ioc = start_ioc(args=["--data-dir", str(work), "--max-rate"], log_path=work / "ioc.log")
    os.environ.update(ioc.env)  # before the CA client context exists
    from caproto import ChannelType
    from caproto.threading.client import Context

    ctx = Context()
    try:
        names = [
            "DET:cam1:TriggerMode", "DET:cam1:SizeX", "DET:cam1:SizeY", "DET:cam1:BinX",
            "DET:cam1:CounterDepth", "SCAN:ShapeY", "SCAN:ShapeX", "SCAN:Dwell",
            "DET:HDF1:FileName", "DET:HDF1:Capture", "DET:HDF1:FullFileName_RBV",
            "DET:cam1:Acquire", "SCAN:Start", "SCAN:State_RBV", "DET:HDF1:NumCaptured_RBV",
            "DET:HDF1:DroppedFrames_RBV", "DET:HDF1:Capture_RBV", "MIC:StageX",
        ]  # fmt: skip
        pvs = dict(zip(names, ctx.get_pvs(*(ioc.prefix + n for n in names), timeout=5),
                       strict=True))  # fmt: skip

        def put(name, value):
            kind = {"data_type": ChannelType.STRING} if isinstance(value, str) else {}
            pvs[name].write(value, wait=True, timeout=10, **kind)

        def get(name):
            value = pvs[name].read(timeout=10, data_type=ChannelType.STRING).data
            if pvs[name].channel.native_data_type != ChannelType.ENUM:
                value = pvs[name].read(timeout=10).data
            return value[0] if len(value) == 1 else value

        t_settings = time.perf_counter()
        put("DET:cam1:TriggerMode", "External")
        put("DET:cam1:BinX", 1)
        put("DET:cam1:SizeX", args.frame)
        put("DET:cam1:SizeY", args.frame)
        put("DET:cam1:CounterDepth", "12")
        put("SCAN:ShapeY", ny)
        put("SCAN:ShapeX", nx)
        put("SCAN:Dwell", 1e-5)
        put("DET:HDF1:FileName", list(b"bench\0"))
        t_settings = time.perf_counter() - t_settings

        put("DET:HDF1:Capture", 1)
        path = bytes(bytearray(get("DET:HDF1:FullFileName_RBV"))).rstrip(b"\0").decode()
        put("DET:cam1:Acquire", 1)
        stage = float(get("MIC:StageX"))
        latencies: list[float] = []

        def finished() -> bool:
            return get("DET:HDF1:Capture_RBV") == 0 and get("SCAN:State_RBV") != b"Running"

        t0 = time.perf_counter()
        put("SCAN:Start", 1)
        # One client thread: a timed put, a pause, now and then a look at the state.
        i = 0
        while True:
            t = time.perf_counter()
            put("MIC:StageX", stage)
            latencies.append(time.perf_counter() - t)
            time.sleep(0.005)
            i += 1
            if i % 4 == 0 and finished():
                break
        elapsed = time.perf_counter() - t0
        written = int(get("DET:HDF1:NumCaptured_RBV"))
        dropped = int(get("DET:HDF1:DroppedFrames_RBV"))
    finally:
        ctx.disconnect()
        ioc.stop()

    from bluestem.frames import verify_file

    report = verify_file(path)
    fps = written / elapsed
    size = Path(path).stat().st_size
    os.sync()
    baseline_fps, baseline_s = writer_only(path, work, (ny, nx))
    lat_ms = np.array(latencies) * 1e3
    p50 = float(np.median(lat_ms))
    p99 = float(np.percentile(lat_ms, 99))

    print(
        f"IOC acquisition: {written} frames of {args.frame}^2 in {elapsed:.2f} s = "
        f"{fps:,.0f} frames/s ({size / elapsed / 1e6:,.0f} MB/s on disk), dropped {dropped}"
    )
    print(f"  settings: {t_settings * 1e3:.1f} ms for 9 puts; verify: {report.summary()}")
    print(
        f"put latency of MIC:StageX during the acquisition ({len(lat_ms)} puts): "
        f"median {p50:.2f} ms, p99 {p99:.2f} ms, max {lat_ms.max():.2f} ms, "
        f"mean {statistics.fmean(lat_ms):.2f} ms"
    )
    print(
        f"baseline, writer alone fed from memory: {baseline_fps:,.0f} frames/s "
        f"({total} frames in {baseline_s:.2f} s)"
    )
    print(f"ratio IOC / writer-only: {fps / baseline_fps:.2f}")  # fmt: skip
    result = {
        "fps": round(fps, 1),
        "dropped": dropped,
        "file": path,
        "verify_ok": bool(report.ok),
        "put_ms_p50": round(p50, 3),
        "put_ms_p99": round(p99, 3),
        "baseline_fps": round(baseline_fps, 1),
        "ratio": round(fps / baseline_fps, 3),
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0 if report.ok and dropped == 0 and written == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
