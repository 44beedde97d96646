"""``bluestem demo``: a whole simulated 4D-STEM acquisition on this machine.

Starts the sim IOC (loopback, private ports, random prefix), sets the instrument over
Channel Access, records one scan to HDF5, verifies the file and stops the IOC.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    """Register ``bluestem demo``."""
    parser = subparsers.add_parser(
        "demo", help="run a simulated 4D-STEM scan end to end and verify the file"
    )
    parser.add_argument(
        "--shape", nargs=2, type=int, default=(128, 128), metavar=("NY", "NX"),
        help="scan positions (default: 128 128)",
    )  # fmt: skip
    parser.add_argument(
        "--frame", type=int, default=128, metavar="K", help="frame size K x K (default: 128)"
    )
    parser.add_argument(
        "--out", default="bluestem-demo", help="output directory (default: ./bluestem-demo)"
    )
    parser.add_argument("--specimen", default="srtio3", help="twin specimen (default: srtio3)")
    parser.add_argument(
        "--max-rate", action="store_true", help="no dwell pacing: as fast as the frame path"
    )
    parser.set_defaults(func=run)


class _Client:
    """Synchronous CA calls with explicit timeouts and no repeater daemon."""

    def __init__(self, prefix: str, timeout: float = 5.0):
        self.prefix, self.timeout = prefix, timeout

    def put(self, name: str, value) -> None:
        from caproto.sync.client import write

        if isinstance(value, str) and name.split(":")[-1] in _CHAR_PVS:
            value = [*value.encode(), 0]
        write(self.prefix + name, value, notify=True, timeout=self.timeout, repeater=False)

    def get(self, name: str):
        from caproto.sync.client import read

        data = read(self.prefix + name, timeout=self.timeout, repeater=False).data
        value = data[0] if len(data) == 1 else data
        return value.decode() if isinstance(value, bytes) else value

    def get_str(self, name: str) -> str:
        from caproto.sync.client import read

        data = read(self.prefix + name, timeout=self.timeout, repeater=False).data
        return bytes(bytearray(data)).rstrip(b"\0").decode()


_CHAR_PVS = {"FilePath", "FileName", "FileTemplate"}


def _next_number(out: Path, name: str) -> int:
    numbers = [
        int(m.group(1))
        for p in out.glob(f"{name}_*.h5")
        if (m := re.search(r"_(\d+)\.h5$", p.name))
    ]
    return max(numbers, default=0) + 1


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the file verifies with every frame present."""
    import os

    from bluestem.procs import start_ioc

    ny, nx = args.shape
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ioc_args = ["--data-dir", str(out), "--specimen", args.specimen]
    if args.max_rate:
        ioc_args.append("--max-rate")
    print(f"starting the sim IOC (log: {out / 'ioc.log'}) ...", flush=True)
    try:
        ioc = start_ioc(args=ioc_args, log_path=out / "ioc.log", timeout=120)
    except (RuntimeError, TimeoutError) as exc:
        print(f"the IOC did not start: {exc}", file=sys.stderr)
        return 1
    os.environ.update(ioc.env)  # before the first CA call of this process
    try:
        return _acquire(_Client(ioc.prefix), out, ny, nx, args.frame)
    except Exception as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        code = ioc.stop()
        print(f"IOC (pid {ioc.pid}, prefix {ioc.prefix}) stopped, exit code {code}")


def _acquire(ca: _Client, out: Path, ny: int, nx: int, frame: int) -> int:
    from bluestem.frames import verify_file

    settings = [
        ("MIC:HighTension", 200.0), ("MIC:ConvergenceAngle", 20.0),
        ("MIC:CameraLength", 100.0), ("MIC:BeamCurrent", 10.0), ("MIC:BeamBlank", "Off"),
        ("DET:cam1:TriggerMode", "External"), ("DET:cam1:BinX", 1),
        ("DET:cam1:SizeX", frame), ("DET:cam1:SizeY", frame),
        ("DET:cam1:CounterDepth", "12"),
        ("SCAN:ShapeY", ny), ("SCAN:ShapeX", nx), ("SCAN:StepY", 0.1), ("SCAN:StepX", 0.1),
        ("SCAN:Dwell", 2e-5), ("SCAN:Flyback", 0.0), ("SCAN:Mode", "Fly"),
        ("DET:HDF1:FilePath", str(out)), ("DET:HDF1:FileName", "demo"),
        ("DET:HDF1:FileNumber", _next_number(out, "demo")), ("DET:HDF1:AutoIncrement", "Yes"),
    ]  # fmt: skip
    for name, value in settings:
        ca.put(name, value)
    total = ny * nx
    ca.put("DET:HDF1:Capture", 1)
    path = ca.get_str("DET:HDF1:FullFileName_RBV")
    ca.put("DET:cam1:Acquire", 1)
    print(f"scan {ny} x {nx} of {frame} x {frame} frames -> {path}", flush=True)
    t0 = time.monotonic()
    interactive, last_logged = sys.stdout.isatty(), 0.0
    ca.put("SCAN:Start", 1)
    while True:
        time.sleep(0.25)
        written = int(ca.get("DET:HDF1:NumCaptured_RBV"))
        dropped = int(ca.get("DET:HDF1:DroppedFrames_RBV"))
        elapsed = time.monotonic() - t0
        line = f"  frames {written:>9,}/{total:,}  {written / elapsed:>9,.0f} frames/s  "
        line += f"dropped {dropped}"
        # A terminal gets one line redrawn in place; a log file gets a line a second.
        if interactive:
            print("\r" + line, end="", flush=True)
        elif elapsed - last_logged >= 1.0:
            print(line, flush=True)
            last_logged = elapsed
        if ca.get("DET:HDF1:Capture_RBV") == 0 and ca.get("SCAN:State_RBV") != "Running":
            break
    elapsed = time.monotonic() - t0
    written = int(ca.get("DET:HDF1:NumCaptured_RBV"))
    dropped = int(ca.get("DET:HDF1:DroppedFrames_RBV"))
    if interactive:
        print()
    report = verify_file(path)
    print(f"file:      {path}")
    print(f"verify:    {report.summary()}")
    print(f"frames/s:  {written / elapsed:,.0f} ({written} frames in {elapsed:.2f} s)")
    print(f"dropped:   {dropped}")
    print(f"writer:    {ca.get_str('DET:HDF1:WriteMessage')}")
    ok = report.ok and dropped == 0 and written == total and ca.get("SCAN:State_RBV") == "Done"
    print("demo OK" if ok else "demo FAILED")
    return 0 if ok else 1
