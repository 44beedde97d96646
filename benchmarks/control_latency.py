"""Benchmark: a microscope setting put plus verified readback, through the ophyd device.

``Microscope.defocus.set(v).wait()`` with v alternating between two values (so every set
really changes the setting), N times against ``bluestem ioc sim`` on loopback: the write
with put completion, then the readback polled until it is within tolerance (VerifiedSetting).

Baselines, in the same run and on the same PV (``MIC:Defocus``): raw caproto threading
client put-with-completion (the primary baseline), and raw put-with-completion followed by
one read of ``Defocus_RBV`` (what a hand-written verified put costs at least).

``ratio`` = baseline median / ours median (ours is slower when < 1; the fraction of the
verified set that is the bare CA put). ``ratio_put_get`` is the same against put + get.

Usage: python benchmarks/control_latency.py [-n 200] [--values 10 10.2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Bench, ms_stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="operations per method")
    parser.add_argument("--values", nargs=2, type=float, default=(10.0, 10.2), help="nm")
    args = parser.parse_args()
    if not 10 <= args.n <= 100_000:
        raise SystemExit(f"-n {args.n}: allowed 10..100000")
    work = Path(tempfile.mkdtemp(prefix="bluestem-latency-"))
    a, b = args.values
    warm = 20
    try:
        with Bench(work, catalog=False) as bench:
            from caproto.threading.client import Context

            setting = bench.mic.defocus
            ours = []
            for i in range(warm + args.n):
                v = a if i % 2 else b
                t = time.perf_counter()
                setting.set(v).wait(10)
                if i >= warm:
                    ours.append(time.perf_counter() - t)
            last_ours = float(setting.get())

            ctx = Context()
            try:
                prefix = bench.ioc.prefix + "MIC:"
                pv, rbv = ctx.get_pvs(prefix + "Defocus", prefix + "Defocus_RBV", timeout=10)
                put_only, put_get = [], []
                for i in range(warm + args.n):
                    v = a if i % 2 else b
                    t = time.perf_counter()
                    pv.write([v], wait=True, timeout=10)
                    if i >= warm:
                        put_only.append(time.perf_counter() - t)
                for i in range(warm + args.n):
                    v = a if i % 2 else b
                    t = time.perf_counter()
                    pv.write([v], wait=True, timeout=10)
                    got = float(rbv.read(timeout=10).data[0])
                    if i >= warm:
                        put_get.append(time.perf_counter() - t)
                rbv_follows = abs(got - v) <= 0.0501
            finally:
                ctx.disconnect()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    s_ours, s_put, s_pg = ms_stats(ours), ms_stats(put_only), ms_stats(put_get)
    for label, s in (
        ("ophyd Microscope.defocus.set(v).wait() (put + verified readback)", s_ours),
        ("baseline: raw caproto put-with-completion of MIC:Defocus", s_put),
        ("baseline 2: raw caproto put-with-completion + one get of Defocus_RBV", s_pg),
    ):
        print(
            f"{label}: N={args.n}, median {s['median']:.2f} ms, p99 {s['p99']:.2f} ms, "
            f"min {s['min']:.2f}, max {s['max']:.2f}, mean {s['mean']:.2f} ms"
        )
    ratio = s_put["median"] / s_ours["median"]
    ratio_pg = s_pg["median"] / s_ours["median"]
    print(
        f"ratio = baseline median / ours median = {ratio:.2f} (below 1: the verified set is "
        f"slower than the bare put); against put+get {ratio_pg:.2f}. "
        f"Readback last value {last_ours}, raw readback follows: {rbv_follows}"
    )
    print(
        json.dumps(
            {
                "n": args.n,
                "median_ms": round(s_ours["median"], 3),
                "p99_ms": round(s_ours["p99"], 3),
                "max_ms": round(s_ours["max"], 3),
                "baseline_median_ms": round(s_put["median"], 3),
                "baseline_p99_ms": round(s_put["p99"], 3),
                "baseline_put_get_median_ms": round(s_pg["median"], 3),
                "baseline_put_get_p99_ms": round(s_pg["p99"], 3),
                "ratio": round(ratio, 3),
                "ratio_put_get": round(ratio_pg, 3),
                "ratio_definition": "baseline median / ours median (1 = no overhead; lower "
                "= ours slower)",
            }
        )
    )
    return 0 if rbv_follows else 1


if __name__ == "__main__":
    raise SystemExit(main())
