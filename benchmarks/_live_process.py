"""The live reduction in a process of its own, fed by bluesky's 0MQ proxy (live_lag.py).

Usage: python benchmarks/_live_process.py OUT_ADDRESS RESULTS.jsonl
Prints "ready" once subscribed; after every run's stop document appends one JSON line
``{"uid": ..., "reduced": [[datum_uid, wall_time], ...], "derived": ...}``. Stopped by
SIGTERM from live_lag.py.
"""

from __future__ import annotations

import json
import signal
import sys


def main() -> int:
    address, results = sys.argv[1], sys.argv[2]
    from bluesky.callbacks.zmq import RemoteDispatcher

    from bluestem.callbacks import LiveReduction

    dispatcher = RemoteDispatcher(address)
    live = LiveReduction()

    def report(name, doc):
        if name == "stop":
            with open(results, "a") as f:
                f.write(json.dumps({"uid": doc["run_start"], "reduced": live.reduced,
                                    "derived": live.derived_uid}) + "\n")  # fmt: skip

    dispatcher.subscribe(live)
    dispatcher.subscribe(report)  # after the reduction: its stop has run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    dispatcher.start()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
