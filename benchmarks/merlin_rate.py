"""Benchmark: merlin-sim -> bluestem ioc merlin -> HDF5 with checksums, per counter depth
and layout, against raw loopback TCP of the same message sizes.

For each layout (single chip 256², quad 512²) a ``bluestem merlin-sim`` (frames from a
small file of random counts) and a ``bluestem ioc merlin`` reading it run as processes;
for each counter depth (1, 6, 12, 24) one raster of ``--shape`` positions at the shortest
dwell is taken through CA (capture, arm, start, wait): frames/s and MB/s received (the
stream's bytes), dropped frames (must be 0) and the file verified. Baseline, in the same
run: one thread sending messages of the same size over a loopback TCP socket to another
that receives them into a buffer (``recv_into``), the bytes/s the two cores move with
nothing else done. ``ratio`` = ours / raw TCP (bytes/s), per case; the last line's
``ratio`` is the median over the cases.

Both processes, the writer and the baseline share the machine's 2 cores: the simulator's
packing is part of what is measured (a real detector packs in its own hardware).

Usage: python benchmarks/merlin_rate.py [--shape NY NX] [--repeats N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DEPTHS = (1, 6, 12, 24)


def raw_tcp(message: int, total: int) -> float:
    """Bytes/s of ``total`` bytes in ``message``-byte sendall calls over loopback."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    got = [0]

    def receive():
        conn, _ = server.accept()
        buf = memoryview(bytearray(8 * 1024**2))
        while (n := conn.recv_into(buf)) > 0:
            got[0] += n
        conn.close()

    thread = threading.Thread(target=receive)
    thread.start()
    send = socket.create_connection(("127.0.0.1", port))
    payload = np.random.default_rng(0).integers(0, 255, message, dtype=np.uint8).tobytes()
    t0 = time.perf_counter()
    for _ in range(max(1, total // message)):
        send.sendall(payload)
    send.close()
    thread.join()
    server.close()
    return got[0] / (time.perf_counter() - t0)


def message_bytes(depth: int, chips: int) -> int:
    from bluestem.ioc.merlin.pixels import payload_bytes

    return 15 + 384 * (1 if chips == 1 else 2) + payload_bytes(depth, True, chips)


def run_layout(chips: int, shape, frames_file: Path, work: Path, repeats: int) -> list[dict]:
    from bluestem.procs import ca_environment, start_ioc, start_merlin_sim

    sim = start_merlin_sim(["--frames-from", str(frames_file), "--chips", str(chips)],
                           log_path=work / f"sim-{chips}.log")  # fmt: skip
    env = ca_environment()
    ioc = start_ioc("merlin", args=["--data-dir", str(work), "--host", "127.0.0.1",
                                    "--command-port", str(sim.command_port),
                                    "--data-port", str(sim.data_port)],
                    env=env, log_path=work / f"ioc-{chips}.log")  # fmt: skip
    rows = []
    try:
        rows = _acquisitions(ioc, chips, shape, repeats)
    finally:
        ioc.stop()
        sim.stop()
    return rows


def _acquisitions(ioc, chips: int, shape, repeats: int) -> list[dict]:
    from caproto import ChannelType
    from caproto.threading.client import Context

    from bluestem.frames import verify_file

    os.environ.update(ioc.env)  # before this layout's CA client context exists
    ctx = Context()
    pvs: dict = {}

    def pv(name):
        if name not in pvs:  # channels kept: no search during an acquisition
            (pvs[name],) = ctx.get_pvs(ioc.prefix + name, timeout=10)
        return pvs[name]

    def put(name, value):
        kind = {"data_type": ChannelType.STRING} if isinstance(value, str) else {}
        pv(name).write(value, wait=True, timeout=30, **kind)

    def get(name):
        data = pv(name).read(timeout=30).data
        return data[0] if len(data) == 1 else data

    try:
        return _run_depths(put, get, chips, shape, repeats, verify_file)
    finally:
        ctx.disconnect()


def _run_depths(put, get, chips: int, shape, repeats: int, verify_file) -> list[dict]:

    sensor = 256 if chips == 1 else 512
    n = shape[0] * shape[1]
    for name, value in (("DET:cam1:TriggerMode", "External"), ("SCAN:ShapeY", shape[0]),
                        ("SCAN:ShapeX", shape[1]), ("SCAN:Dwell", 1e-6)):  # fmt: skip
        put(name, value)
    rows = []
    for depth in DEPTHS:
        put("DET:cam1:CounterDepth", str(depth))
        rates = []
        for r in range(repeats):
            put("DET:HDF1:FileName", list(f"merlin-{chips}-{depth}-{r}\0".encode()))
            put("DET:HDF1:Capture", 1)
            path = bytes(bytearray(get("DET:HDF1:FullFileName_RBV"))).rstrip(b"\0").decode()
            put("DET:cam1:Acquire", 1)
            t0 = time.perf_counter()
            put("SCAN:Start", 1)
            while get("DET:HDF1:Capture_RBV") != 0:
                time.sleep(0.005)
            wall = time.perf_counter() - t0
            dropped = int(get("DET:HDF1:DroppedFrames_RBV"))
            report = verify_file(path)
            rates.append((n / wall, dropped, report.ok and report.frames_received == n))
            os.unlink(path)
        fps = statistics.median(r[0] for r in rates)
        size = message_bytes(depth, chips)
        row = {"chips": chips, "sensor": sensor, "depth": depth, "fps": round(fps),
               "MB_s": round(fps * size / 1e6, 1), "message_bytes": size,
               "dropped": max(r[1] for r in rates),
               "verified": all(r[2] for r in rates)}  # fmt: skip
        rows.append(row)
        print(f"{sensor}² {depth:2d}-bit: {fps:8,.0f} frames/s, {row['MB_s']:7.1f} MB/s, "
              f"dropped {row['dropped']}, verified {row['verified']}", flush=True)  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=2, type=int, default=(32, 64))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    import h5py

    work = Path(args.dir or tempfile.mkdtemp(prefix="bluestem-merlin-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    frames_file = work / "frames.h5"
    with h5py.File(frames_file, "w") as f:  # mostly small counts, as in 4D-STEM
        f["frames"] = np.random.default_rng(1).poisson(3.0, (16, 256, 256)).astype(np.uint16)
    rows = []
    for chips in (1, 4):
        rows += run_layout(chips, tuple(args.shape), frames_file, work, args.repeats)
    for row in rows:
        total = max(64 * 1024**2, 200 * row["message_bytes"])
        tcp = statistics.median(raw_tcp(row["message_bytes"], total) for _ in range(3))
        row["raw_tcp_MB_s"] = round(tcp / 1e6, 1)
        row["ratio"] = round(row["MB_s"] * 1e6 / tcp, 3)
        print(f"{row['sensor']}² {row['depth']:2d}-bit: raw loopback TCP {tcp / 1e6:7.1f} "
              f"MB/s ({tcp / row['message_bytes']:,.0f} messages/s) -> ratio "
              f"{row['ratio']:.3f}")  # fmt: skip
    ratio = statistics.median(r["ratio"] for r in rows)
    print(json.dumps({"benchmark": "merlin_rate", "cases": rows, "shape": list(args.shape),
                      "baseline": "raw loopback TCP of the same message size",
                      "ratio": ratio}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
