"""A libca client (pyepics) that puts with completion and then reads a monitored value
sees the new value, as with an EPICS record: the IOC sends a put's completion after the
monitor updates it caused (bluestem.ioc.ordered_server). Before that fix 13 of 20 such
reads returned the old value.

The client runs in a subprocess so that libca reads the IOC's CA environment fresh."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.system

CLIENT = r"""
import json, sys
import epics
prefix, n = sys.argv[1], int(sys.argv[2])
pv = epics.PV(prefix + "MIC:Defocus", auto_monitor=True)
rbv = epics.PV(prefix + "MIC:Defocus_RBV", auto_monitor=True)
assert pv.wait_for_connection(10) and rbv.wait_for_connection(10)
start = pv.get(timeout=5)
stale, failed = [], 0
for i in range(n):
    value = float(round(start + 1.5 + i, 1))
    if pv.put(value, wait=True, timeout=10) != 1:
        failed += 1
    got = (pv.get(timeout=5), rbv.get(timeout=5))
    if got != (value, value):
        stale.append([value, *got])
pv.put(start, wait=True, timeout=10)
print(json.dumps({"stale": stale, "failed": failed, "n": n}))
"""


def test_caput_wait_then_a_monitored_get_sees_the_new_value(sim):
    ioc, ca, _ = sim
    env = {**os.environ, **ioc.env}
    result = subprocess.run([sys.executable, "-c", CLIENT, ioc.prefix, "50"], env=env,
                            capture_output=True, text=True, timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["failed"] == 0
    assert outcome["stale"] == [], f"{len(outcome['stale'])} of 50 reads were stale"
    assert ca.get("MIC:Defocus_RBV") == pytest.approx(ca.get("MIC:Defocus"))
