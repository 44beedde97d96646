"""A closed loop against the real IOC and catalogue: a toy agent drives MIC:Defocus to a
target from what small real rasters recorded; every iteration is in the catalogue,
``bluestem loop show`` prints it, and the decisions rebuilt from the stored documents are
those the loop made. A refused setting fails the loop, restores the defocus and says why.
"""

from __future__ import annotations

import subprocess
import sys

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from sessions import inventory, set_frame

from bluestem.loop import Agent

pytestmark = pytest.mark.system

FRAME = 32
SHAPE = (4, 4)
START = -20.0  # nm
TARGET = 12.3  # nm
CLI = [sys.executable, "-P", "-c", "import sys; from bluestem.cli import main; sys.exit(main())"]


class SecantDefocus(Agent):
    """Drive the measured defocus to ``target``: measure here, take one step, then secant
    steps on the error (rounded to the IOC's 0.1 nm quantum)."""

    def __init__(self, target: float, step: float = 10.0, name: str = "mic_defocus"):
        self.target, self.step, self.name = target, step, name
        self.xs: list[float] = []
        self.errors: list[float] = []

    def parameters(self) -> dict:
        return {"target": self.target, "step": self.step, "name": self.name}

    def suggest(self, n: int = 1):
        if not self.xs:
            return [{}]
        if len(self.xs) == 1:
            return [{self.name: round(self.xs[0] + self.step, 1)}]
        (x0, x1), (e0, e1) = self.xs[-2:], self.errors[-2:]
        slope = (e1 - e0) / (x1 - x0) if x1 != x0 else 1.0
        return [{self.name: round(x1 - e1 / slope, 1)}]

    def ingest(self, point, measurement):
        self.xs.append(float(point[self.name]))
        self.errors.append(float(measurement["values"]["defocus"]) - self.target)

    def report(self) -> dict:
        out = {"error": self.errors[-1], "decision": "secant step" if len(self.xs) > 1
               else "first step"}  # fmt: skip
        if abs(self.errors[-1]) > 1e5:
            out["diverged"] = f"error {self.errors[-1]:g} nm"
        return out


def done(report: dict) -> bool:
    return abs(report["error"]) < 0.1


def acquire_raster(session):
    """A 4 x 4 raster per iteration; the measurement is what the raster recorded: the
    defocus it read back (start document) and the mean counts of its frames (its file)."""
    from bluestem.frames import FrameReader
    from bluestem.plans import raster, run_documents

    def acquire(readback, iteration, loop_md):
        uid, runs = yield from run_documents(raster(
            session.det, session.scan, shape=SHAPE, dwell=1e-3, microscope=session.mic,
            md=loop_md))  # fmt: skip
        docs = runs[uid]
        (uri,) = {d["uri"] for n, d in docs if n == "stream_resource"}
        path = uri.split("file://localhost", 1)[-1]
        with FrameReader(path) as reader:
            frames = reader.read(0, reader.total)
        counts = frames.reshape(len(frames), -1).sum(axis=1)
        defocus = docs[0][1]["microscope"]["defocus"]
        return uid, {
            "method": "raster readback + frame counts",
            "parameters": {"shape": list(SHAPE), "file": path},
            "values": {"defocus": defocus, "mean_counts": float(counts.mean())},
            "uncertainties": {"defocus": 0.05,
                              "mean_counts": float(counts.std() / np.sqrt(len(counts)))},
        }  # fmt: skip

    return acquire


@pytest.fixture(scope="module")
def session(sim, server, tmp_path_factory):
    from bluestem.session import build_session

    ioc, ca, data = sim
    set_frame(ca, FRAME)
    s = build_session(inventory(ioc, data, tmp_path_factory.mktemp("journal"), server=server))
    s.starts = []
    s.RE.subscribe(lambda name, doc: s.starts.append(doc) if name == "start" else None)
    yield s
    s.close()


@pytest.fixture(scope="module")
def loop(session, server):
    from bluestem.plans import closed_loop

    session.RE(bps.mv(session.mic.defocus, START))
    plan = closed_loop(SecantDefocus(TARGET), acquire_raster(session),
                       settings={"mic_defocus": session.mic.defocus}, max_iterations=6,
                       converged=done, goal={"mic_defocus": TARGET, "tolerance_nm": 0.1},
                       md={"purpose": "system test"})  # fmt: skip
    session.RE(plan)
    (umbrella,) = [d for d in session.starts if d.get("plan_name") == "closed_loop"]
    assert session.writer.flush(60)
    return umbrella["uid"]


def _client(server):
    from tiled.client import from_uri

    return from_uri(server.uri, api_key=server.api_key)


def test_the_loop_reaches_the_target(session, loop):
    assert session.mic.defocus.get() == pytest.approx(TARGET, abs=0.05)


def test_every_iteration_is_in_the_catalogue(session, server, loop):
    from tiled.queries import Key

    from bluestem.loop import read_loop

    client = _client(server)
    assert loop in client, f"the umbrella run {loop} is not in the catalogue"
    run = client[loop]
    start, stop = run.metadata["start"], run.metadata["stop"]
    assert start["closed_loop"]["agent"]["class"] == "test_loop_system.SecantDefocus"
    assert start["closed_loop"]["goal"] == {"mic_defocus": TARGET, "tolerance_nm": 0.1}
    assert stop["exit_status"] == "success"
    assert stop["reason"] == "converged after 3 iteration(s)"
    record = read_loop(run.documents())
    rows = record.iterations
    assert [r.decision for r in rows] == ["continue", "continue", "converged"]
    assert [r.requested for r in rows] == [{}, {"mic_defocus": START + 10},
                                           {"mic_defocus": TARGET}]  # fmt: skip
    assert rows[0].readback["mic_defocus"] == pytest.approx(START, abs=0.05)
    assert all(r.analysis["values"]["mean_counts"] > 0 for r in rows)
    # each acquisition is its own run in the catalogue, linked to the umbrella
    acquisitions = client.search(Key("start.closed_loop.uid") == loop)
    linked = {u: acquisitions[u].metadata["start"]["closed_loop"]["iteration"]
              for u in acquisitions}  # fmt: skip
    assert linked == {r.inputs[0]: r.iteration for r in rows}
    for uid in linked:
        assert client[uid].metadata["stop"]["exit_status"] == "success"
        assert client[uid].metadata["start"]["plan_name"] == "raster"


def test_the_decisions_rebuilt_from_the_catalogue_are_those_made(server, loop):
    from bluestem.loop import make_agent, read_loop, replay_decisions

    record = read_loop(_client(server)[loop].documents())
    agent = make_agent(record.info["agent"])
    assert isinstance(agent, SecantDefocus) and agent.target == TARGET
    made = [r.requested for r in record.iterations]
    assert len(made) == 3
    assert replay_decisions(agent, record.iterations) == made


def test_loop_show_prints_the_table(server, loop):
    result = subprocess.run(
        [*CLI, "loop", "show", loop[:8], "--catalog", server.uri, "--api-key", server.api_key],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"closed loop {loop}: success (converged after 3 iteration(s))"
    rows = [line for line in lines if line[:3].strip().isdigit()]
    assert len(rows) == 3
    assert "(no change)" in rows[0] and "mic_defocus=-20" in rows[0]
    assert f"mic_defocus={TARGET}" in rows[2] and "converged" in rows[2]
    assert "raster readback" in rows[1]


def test_a_refused_setting_fails_restores_and_is_recorded(session, server, loop):
    from bluesky.utils import FailedStatus

    from bluestem.loop import read_loop
    from bluestem.plans import closed_loop

    session.RE(bps.mv(session.mic.defocus, START))
    before = session.mic.defocus.get()
    session.starts.clear()
    plan = closed_loop(SecantDefocus(TARGET, step=3e5), acquire_raster(session),
                       settings={"mic_defocus": session.mic.defocus}, max_iterations=4,
                       converged=done)  # fmt: skip
    with pytest.raises(FailedStatus):
        session.RE(plan)
    assert session.mic.defocus.get() == pytest.approx(before, abs=0.05)
    assert session.writer.flush(60)
    uid = session.starts[0]["uid"]
    record = read_loop(_client(server)[uid].documents())
    assert record.stop["exit_status"] == "fail"
    assert record.stop["reason"].startswith("PutRefused: ")
    assert record.stop["reason"].endswith("; settings restored")
    assert record.failure["stage"] == "set" and record.failure["iteration"] == 1
    assert record.restore["ok"] is True
