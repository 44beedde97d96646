"""Closed loops on fake devices: the agent protocol, the plan's messages, its budget and
convergence, failure and restore, and the umbrella run's record (read back and replayed).
"""

from __future__ import annotations

import warnings

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from fake_ioc import fake_instrument
from ophyd import Signal

from bluestem.devices import PutRefused
from bluestem.journal import DocumentJournal, find_runs
from bluestem.loop import (
    Agent,
    AgentProtocol,
    OptimizerAgent,
    TellAskAgent,
    agent_info,
    as_agent,
    make_agent,
    read_loop,
    replay_decisions,
)

TRUE_FOCUS = 7.3  # nm: where the fake's "sharpness" peaks
START = -20.0  # nm: the defocus the loops start from


def sharpness(defocus: float) -> float:
    """The fake measurement: a quadratic peaked at TRUE_FOCUS."""
    return 100.0 - 0.5 * (defocus - TRUE_FOCUS) ** 2


class ParabolaFocus(Agent):
    """A 1-D focus search: measure here, one step either side, then the vertex of the
    parabola through every point (Newton's step on a quadratic); converged when the step
    it would take is below ``tol``; diverged when the fit is not a peak."""

    def __init__(self, step: float = 10.0, tol: float = 0.05, low: float = -500.0,
                 high: float = 500.0, name: str = "mic_defocus"):  # fmt: skip
        self.step, self.tol, self.low, self.high, self.name = step, tol, low, high, name
        self.xs: list[float] = []
        self.ys: list[float] = []

    def parameters(self) -> dict:
        return {"step": self.step, "tol": self.tol, "low": self.low, "high": self.high,
                "name": self.name}  # fmt: skip

    def _vertex(self):
        a, b, c = np.polyfit(self.xs, self.ys, 2)
        return (a, b, c), float(np.clip(-b / (2 * a), self.low, self.high))

    def suggest(self, n: int = 1):
        if not self.xs:
            return [{}]  # measure where we are
        if len(self.xs) < 3:
            x0 = self.xs[0]
            return [{self.name: x0 + (self.step if len(self.xs) == 1 else -self.step)}]
        return [{self.name: round(self._vertex()[1], 6)}]

    def ingest(self, point, measurement):
        self.xs.append(float(point[self.name]))
        self.ys.append(float(measurement["values"]["sharpness"]))

    def report(self) -> dict:
        if len(self.xs) < 3:
            return {"decision": "bracketing", "points": len(self.xs)}
        (a, b, c), vertex = self._vertex()
        out = {"fit": {"a": float(a), "b": float(b), "c": float(c)}, "vertex": vertex,
               "step": abs(vertex - self.xs[-1]), "decision": "parabola vertex"}  # fmt: skip
        if a >= 0:
            out["diverged"] = f"the fit is not a peak (a = {a:.3g} >= 0)"
        return out


def converged(report: dict) -> bool:
    return report.get("step", np.inf) < 0.05


@pytest.fixture
def rig(tmp_path):
    """A RunEngine with a journal (interleaved runs, one file each) and a message log,
    and the fake microscope at START."""
    from bluesky import RunEngine

    _, det, scan, mic = fake_instrument(tmp_path / "raw")
    (tmp_path / "raw").mkdir(exist_ok=True)
    Signal.put(mic.defocus.setpoint, START, force=True)
    mic.defocus.readback.sim_put(START)
    RE = RunEngine({}, call_returns_result=True)
    journal = DocumentJournal(tmp_path / "journal")
    RE.subscribe(journal)
    msgs = []
    RE.msg_hook = msgs.append
    return RE, mic, det, scan, journal, msgs, tmp_path


def probe(mic, *, fail_at: int | None = None, log: list | None = None):
    """An acquire: its own small run reading the microscope, and the fake measurement."""

    def acquire(readback, iteration, loop_md):
        if log is not None:
            log.append((dict(readback), iteration, loop_md))
        uid = yield from bps.open_run({"plan_name": "probe", **loop_md})
        yield from bps.trigger_and_read([mic.defocus])
        yield from bps.close_run()
        if iteration == fail_at:
            raise RuntimeError("the detector IOC went away")
        d = readback["mic_defocus"]
        return uid, {
            "method": "quadratic fake",
            "parameters": {"peak": "sharpness"},
            "values": {"sharpness": sharpness(d)},
            "uncertainties": {"sharpness": 0.0},
        }

    return acquire


def umbrella_record(tmp_path, uid):
    (run,) = [r for r in find_runs(tmp_path / "journal") if r.uid == uid]
    return read_loop(run.documents())


def runs_in(tmp_path) -> dict[str, list]:
    return {r.uid: list(r.documents()) for r in find_runs(tmp_path / "journal")}


# -- the agent protocol ------------------------------------------------------------------
def test_agent_protocol_and_deprecated_aliases():
    agent = ParabolaFocus()
    assert isinstance(agent, AgentProtocol)
    with pytest.warns(DeprecationWarning, match="ask"):
        assert agent.ask(1) == [{}]
    with pytest.warns(DeprecationWarning, match="tell"):
        agent.tell({"mic_defocus": 1.0}, {"values": {"sharpness": 2.0}})
    assert agent.xs == [1.0] and agent.ys == [2.0]
    assert as_agent(agent) is agent
    base = Agent()
    with pytest.raises(NotImplementedError):
        base.suggest(1)
    assert base.report() == {} and base.parameters() == {}


def test_agent_record_rebuilds_the_agent():
    info = agent_info(ParabolaFocus(step=4.0))
    assert info == {"class": "test_loop.ParabolaFocus",
                    "parameters": {"step": 4.0, "tol": 0.05, "low": -500.0, "high": 500.0,
                                   "name": "mic_defocus"}}  # fmt: skip
    again = make_agent(info)
    assert isinstance(again, ParabolaFocus) and again.step == 4.0
    with pytest.raises(ValueError, match="cannot rebuild"):
        make_agent({"class": "no.such.Agent", "parameters": {}})


def test_as_agent_refuses_what_is_not_an_agent():
    with pytest.raises(ValueError, match=r"agent=.*allowed an object with suggest"):
        as_agent(object())


class DuckAgent:
    """Our three methods, no base class."""

    def suggest(self, n=1):
        return [{}]

    def ingest(self, point, measurement):
        self.last = (point, measurement)

    def report(self):
        return {"ok": True}


class OldAgent:
    """bluesky-adaptive's first style: tell(x, y), ask(n), report()."""

    def __init__(self):
        self.told = []

    def ask(self, n):
        return [{"mic_defocus": START + 5.0 * len(self.told)}]

    def tell(self, x, y):
        self.told.append((x["mic_defocus"], y["values"]["sharpness"]))

    def report(self):
        return {"told": len(self.told)}


class FocusOptimizer:
    """bluesky-adaptive 1.0's Optimizer style: suggest(num_points) -> [{..., "_id"}],
    ingest(points) with outcomes keyed by "_id", should_stop(), get_best_points()."""

    def __init__(self):
        self.trials: dict[int, dict] = {}
        self.outcomes: dict[int, dict] = {}

    def suggest(self, num_points=None):
        out = []
        for _ in range(num_points or 1):
            i = len(self.trials)
            self.trials[i] = {"mic_defocus": [START, 0.0, 5.0, 7.3][min(i, 3)]}
            out.append({**self.trials[i], "_id": i})
        return out

    def ingest(self, points):
        for p in points:
            self.outcomes[p["_id"]] = {k: v for k, v in p.items() if k != "_id"}

    def should_stop(self):
        best = max((o["sharpness"] for o in self.outcomes.values()), default=-np.inf)
        return (best > 99.99, "peak found" if best > 99.99 else None)

    def get_best_points(self):
        i = max(self.outcomes, key=lambda k: self.outcomes[k]["sharpness"])
        return [(i, self.trials[i], self.outcomes[i])]


def test_adapters_are_chosen_by_what_the_object_has():
    assert not isinstance(as_agent(DuckAgent()), OptimizerAgent | TellAskAgent)
    assert isinstance(as_agent(FocusOptimizer()), OptimizerAgent)
    with pytest.warns(DeprecationWarning, match="tell"):
        assert isinstance(as_agent(OldAgent()), TellAskAgent)


def test_bluesky_adaptive_recognises_the_optimizer_style():
    protocols = pytest.importorskip("bluesky_adaptive.protocols")
    assert isinstance(FocusOptimizer(), protocols.Optimizer)
    assert isinstance(FocusOptimizer(), protocols.SupportsStoppingCriteria)


# -- validation --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_iterations": 0}, r"max_iterations=0: allowed an integer 1\.\.10000"),
        ({"max_iterations": 2.0}, r"max_iterations=2\.0"),
        ({"max_iterations": True}, r"max_iterations=True"),
        ({"converged": 0.05}, r"converged=0\.05: allowed a callable"),
        ({"restore": "yes"}, r"restore='yes': allowed True or False"),
        ({"settings": {}}, r"settings=\{\}: allowed a mapping"),
        ({"settings": {"iteration": None}}, r"not one of \['iteration'"),
        ({"goal": 3}, r"goal=3: allowed a string"),
        ({"md": {"x": float("nan")}}, r"md: value\['x'\]=nan"),
        ({"agent": 3}, r"agent=3: allowed"),
        ({"acquire": None}, r"acquire=None: allowed a callable"),
    ],
)
def test_bad_arguments_are_refused_before_any_message(rig, kwargs, match):
    from bluestem.plans import closed_loop

    _RE, mic, *_, msgs, _tmp = rig
    args = {"agent": ParabolaFocus(), "acquire": probe(mic),
            "settings": {"mic_defocus": mic.defocus}, "max_iterations": 5,
            "converged": converged, **kwargs}  # fmt: skip
    with pytest.raises(ValueError, match=match):
        next(closed_loop(args.pop("agent"), args.pop("acquire"), **args))
    assert msgs == []


# -- a loop that converges ---------------------------------------------------------------
def test_focus_search_converges_and_is_on_the_record(rig):
    from bluestem.plans import closed_loop

    RE, mic, _det, _scan, journal, _msgs, tmp = rig
    seen = []
    result = RE(closed_loop(ParabolaFocus(), probe(mic, log=seen),
                            settings={"mic_defocus": mic.defocus}, max_iterations=8,
                            converged=converged, goal="maximise sharpness",
                            md={"sample": "SrTiO3"})).plan_result  # fmt: skip
    journal.close()
    # here, +10, -10, then the vertex: measured there, the next step is 0
    assert result.converged and result.iterations == 4
    assert result.reason == "converged after 4 iteration(s)"
    assert mic.defocus.get() == pytest.approx(TRUE_FOCUS, abs=1e-6)  # left at the answer
    assert [d.get("mic_defocus") for d in result.decisions] == pytest.approx(
        [None, START + 10, START - 10, TRUE_FOCUS], abs=1e-6)  # fmt: skip
    # acquire got the settings as read back, the iteration and the link to the umbrella
    assert [i for _, i, _ in seen] == [0, 1, 2, 3]
    assert seen[1][0] == {"mic_defocus": START + 10}
    assert all(md["closed_loop"]["uid"] == result.uid for *_, md in seen)

    runs = runs_in(tmp)
    assert set(runs) == {result.uid, *result.acquisitions} and len(result.acquisitions) == 4
    for i, uid in enumerate(result.acquisitions):
        start = runs[uid][0][1]
        assert start["closed_loop"] == {"uid": result.uid, "iteration": i,
                                        "role": "acquisition"}  # fmt: skip
        assert runs[uid][-1][1]["exit_status"] == "success"

    record = umbrella_record(tmp, result.uid)
    info = record.info
    assert info["agent"]["class"] == "test_loop.ParabolaFocus"
    assert info["goal"] == "maximise sharpness" and info["budget"] == {"max_iterations": 8}
    assert info["settings"] == ["mic_defocus"] and record.start["sample"] == "SrTiO3"
    assert record.stop["exit_status"] == "success"
    assert record.stop["reason"] == "converged after 4 iteration(s)"
    assert record.stop["num_events"] == {"iterations": 4}
    assert record.failure is None and record.restore is None
    rows = record.iterations
    assert [r.decision for r in rows] == ["continue"] * 3 + ["converged"]
    assert [r.inputs for r in rows] == [[u] for u in result.acquisitions]
    assert [r.requested for r in rows] == result.decisions
    assert rows[3].readback == {"mic_defocus": pytest.approx(TRUE_FOCUS)}
    assert rows[0].method == "quadratic fake"
    assert rows[0].analysis["values"]["sharpness"] == sharpness(START)
    assert rows[3].report["fit"]["a"] == pytest.approx(-0.5)
    assert rows[3].report["step"] == pytest.approx(0.0, abs=1e-6)
    # The decisions, rebuilt from the stored documents by a fresh agent, are those made.
    assert replay_decisions(make_agent(info["agent"]), rows) == result.decisions


def test_message_order_and_run_keys(rig):
    from bluestem.plans import closed_loop

    RE, mic, *_, msgs, _tmp = rig
    RE(closed_loop(ParabolaFocus(), probe(mic), settings=[mic.defocus], max_iterations=2,
                   converged=converged))  # fmt: skip
    key = msgs[0].run
    assert msgs[0].command == "open_run" and key.startswith("closed_loop-")
    umbrella = [m.command for m in msgs if m.run == key]
    assert umbrella == ["open_run", "create", "read", "save", "create", "read", "save",
                        "close_run"]  # fmt: skip
    cmds = [(m.command, m.run == key) for m in msgs]
    first_acq = cmds.index(("open_run", False))
    # read the start values, checkpoint, (no change at first), read back, acquire, record
    assert [c for c, _ in cmds[1:first_acq]] == ["read", "checkpoint", "read"]
    i1 = [i for i, c in enumerate(cmds) if c == ("checkpoint", False)][1]
    assert [c for c, _ in cmds[i1 : i1 + 3]] == ["checkpoint", "set", "wait"]
    assert cmds[-1] == ("close_run", True)


# -- budget ------------------------------------------------------------------------------
class NeverSure(ParabolaFocus):
    def report(self):
        return {**super().report(), "diverged": None}


def test_budget_exhausted_is_a_success_that_says_so(rig):
    from bluestem.plans import closed_loop

    RE, mic, _d, _s, journal, _m, tmp = rig
    result = RE(
        closed_loop(
            NeverSure(),
            probe(mic),
            settings={"mic_defocus": mic.defocus},
            max_iterations=3,
            converged=lambda r: False,
        )
    ).plan_result
    journal.close()
    assert not result.converged and result.iterations == 3
    record = umbrella_record(tmp, result.uid)
    assert record.stop["exit_status"] == "success"
    assert record.stop["reason"] == "budget exhausted: 3 iteration(s) without convergence"
    assert [r.decision for r in record.iterations][-1] == "budget exhausted"
    assert mic.defocus.get() == START - 10  # not restored: the loop did not fail


# -- failures ----------------------------------------------------------------------------
def _refuse_beyond(setting, limit: float) -> None:
    """The fake IOC refuses a defocus beyond ``limit`` (the restore is allowed)."""

    def putter(value, *_, **__):
        if abs(value) > limit:
            raise PutRefused(setting.setting, f"{value} is beyond ±{limit}")
        Signal.put(setting.setpoint, value, force=True)
        setting.readback.sim_put(value)

    setting.setpoint.sim_set_putter(putter)


def test_a_refused_setting_stops_restores_and_records_why(rig):
    from bluesky.utils import FailedStatus

    from bluestem.plans import closed_loop

    RE, mic, _d, _s, journal, _m, tmp = rig
    _refuse_beyond(mic.defocus, 25.0)
    uids = []
    RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
    with pytest.raises(FailedStatus):
        RE(closed_loop(ParabolaFocus(step=50.0), probe(mic),
                       settings={"mic_defocus": mic.defocus}, max_iterations=5,
                       converged=converged))  # fmt: skip
    journal.close()
    assert mic.defocus.get() == START  # restored
    record = umbrella_record(tmp, uids[0])
    assert record.stop["exit_status"] == "fail"
    assert record.stop["reason"].startswith("PutRefused: ")
    assert "beyond ±25" in record.stop["reason"]
    assert record.stop["reason"].endswith("; settings restored")
    assert record.failure["stage"] == "set" and record.failure["iteration"] == 1
    assert record.failure["requested"] == {"mic_defocus": START + 50.0}
    assert record.restore["ok"] is True and record.restore["error"] == ""
    assert record.restore["requested"] == record.restore["readback"] == {"mic_defocus": START}
    assert len(record.iterations) == 1  # the iteration before the refusal


def test_a_readback_mismatch_fails_the_loop(rig):
    from bluesky.utils import FailedStatus

    from bluestem.plans import closed_loop

    RE, mic, _d, _s, journal, _m, tmp = rig
    mic.defocus.verify_timeout = 0.1

    def stuck(value, *_, **__):  # the setpoint takes the value, the readback never does
        Signal.put(mic.defocus.setpoint, value, force=True)
        if value == START:
            mic.defocus.readback.sim_put(value)

    mic.defocus.setpoint.sim_set_putter(stuck)
    uids = []
    RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
    with pytest.raises(FailedStatus):
        RE(closed_loop(ParabolaFocus(), probe(mic), settings={"mic_defocus": mic.defocus},
                       max_iterations=5, converged=converged))  # fmt: skip
    journal.close()
    record = umbrella_record(tmp, uids[0])
    assert record.stop["reason"].startswith("ReadbackMismatch: ")
    assert record.restore["ok"] is True and mic.defocus.get() == START


def test_a_failed_acquisition_stops_and_restores(rig):
    from bluestem.plans import closed_loop

    RE, mic, _d, _s, journal, _m, tmp = rig
    uids = []
    RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
    with pytest.raises(RuntimeError, match="went away"):
        RE(closed_loop(ParabolaFocus(), probe(mic, fail_at=2),
                       settings={"mic_defocus": mic.defocus}, max_iterations=5,
                       converged=converged))  # fmt: skip
    journal.close()
    assert mic.defocus.get() == START
    record = umbrella_record(tmp, uids[0])
    assert record.stop["reason"] == "RuntimeError: the detector IOC went away; settings restored"
    assert record.failure["stage"] == "acquire" and record.failure["iteration"] == 2


def test_no_restore_when_asked_not_to(rig):
    from bluestem.plans import closed_loop

    RE, mic, *_ = rig
    with pytest.raises(RuntimeError):
        RE(closed_loop(ParabolaFocus(), probe(mic, fail_at=1), restore=False,
                       settings={"mic_defocus": mic.defocus}, max_iterations=5,
                       converged=converged))  # fmt: skip
    assert mic.defocus.get() == START + 10


class Diverging(ParabolaFocus):
    def report(self):
        out = super().report()
        if len(self.xs) >= 2:
            out["diverged"] = "the sharpness fell on both sides"
        return out


def test_divergence_reported_by_the_agent_fails_and_restores(rig):
    from bluestem.plans import LoopDiverged, closed_loop

    RE, mic, _d, _s, journal, _m, tmp = rig
    uids = []
    RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
    with pytest.raises(LoopDiverged, match="fell on both sides"):
        RE(closed_loop(Diverging(), probe(mic), settings={"mic_defocus": mic.defocus},
                       max_iterations=5, converged=converged))  # fmt: skip
    journal.close()
    record = umbrella_record(tmp, uids[0])
    assert record.iterations[-1].decision == "diverged: the sharpness fell on both sides"
    assert record.failure["stage"] == "diverged"
    assert record.stop["reason"].startswith("LoopDiverged: ")
    assert mic.defocus.get() == START


def test_an_unknown_setting_suggested_fails(rig):
    from bluestem.plans import closed_loop

    RE, mic, *_ = rig

    class Wanders(DuckAgent):
        def suggest(self, n=1):
            return [{"mic_stage_x": 1.0}]

    with pytest.raises(ValueError, match=r"\['mic_stage_x'\] are not settings of this loop"):
        RE(closed_loop(Wanders(), probe(mic), settings={"mic_defocus": mic.defocus},
                       max_iterations=2, converged=converged))  # fmt: skip


def test_abort_restores_and_the_runengine_records_the_abort(rig):
    from bluestem.plans import closed_loop

    RE, mic, _d, _s, journal, _m, tmp = rig

    def pausing(readback, iteration, loop_md):
        out = yield from probe(mic)(readback, iteration, loop_md)
        if iteration == 1:
            yield from bps.checkpoint()
            yield from bps.pause()
        return out

    uids = []
    RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
    from bluesky.utils import RunEngineInterrupted

    with pytest.raises(RunEngineInterrupted):
        RE(closed_loop(ParabolaFocus(), pausing, settings={"mic_defocus": mic.defocus},
                       max_iterations=5, converged=converged))  # fmt: skip
    assert RE.state == "paused"
    RE.abort("enough")
    journal.close()
    assert mic.defocus.get() == START
    record = umbrella_record(tmp, uids[0])
    assert record.stop["exit_status"] == "abort" and record.restore["ok"] is True


# -- other agents in the loop ------------------------------------------------------------
def test_a_bluesky_adaptive_optimizer_runs_in_the_loop(rig):
    from bluestem.plans import closed_loop

    RE, mic, _d, _s, journal, _m, tmp = rig
    opt = FocusOptimizer()
    result = RE(closed_loop(opt, probe(mic), settings={"mic_defocus": mic.defocus},
                            max_iterations=6,
                            converged=lambda r: r["should_stop"])).plan_result  # fmt: skip
    journal.close()
    assert result.converged and result.iterations == 4
    assert opt.outcomes[3] == {"sharpness": 100.0}  # ingested by "_id"
    assert result.report["best"][0]["parameters"] == {"mic_defocus": 7.3}
    record = umbrella_record(tmp, result.uid)
    assert record.info["agent"]["class"] == "test_loop.FocusOptimizer"
    assert record.info["agent"]["adapter"] == "OptimizerAgent"
    assert record.iterations[0].requested == {"mic_defocus": START}


def test_an_old_tell_ask_agent_runs_with_a_warning(rig):
    from bluestem.plans import closed_loop

    RE, mic, *_ = rig
    old = OldAgent()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = RE(
            closed_loop(
                old,
                probe(mic),
                settings={"mic_defocus": mic.defocus},
                max_iterations=3,
                converged=lambda r: False,
            )
        ).plan_result
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert [x for x, _ in old.told] == [START, START + 5, START + 10]
    assert result.report == {"told": 3}


# -- a real raster as the acquisition ----------------------------------------------------
def test_raster_acquisitions_with_their_documents(rig):
    from bluestem.plans import closed_loop, raster, run_documents

    RE, mic, det, scan, journal, _m, tmp = rig

    def acquire(readback, iteration, loop_md):
        uid, runs = yield from run_documents(raster(det, scan, shape=(2, 3), dwell=1e-3,
                                                    microscope=mic, reductions=False,
                                                    md=loop_md))  # fmt: skip
        start = runs[uid][0][1]
        files = [d["uri"] for n, d in runs[uid] if n == "stream_resource"]
        defocus = start["microscope"]["defocus"]  # as the run read it back
        return uid, {"method": "raster readback", "values": {"sharpness": sharpness(defocus)},
                     "parameters": {"files": files}}  # fmt: skip

    result = RE(closed_loop(ParabolaFocus(), acquire, settings={"mic_defocus": mic.defocus},
                            max_iterations=6, converged=converged)).plan_result  # fmt: skip
    journal.close()
    assert result.converged and result.iterations == 4
    runs = runs_in(tmp)
    for i, uid in enumerate(result.acquisitions):
        start = runs[uid][0][1]
        assert start["plan_name"] == "raster" and start["closed_loop"]["iteration"] == i
    rows = umbrella_record(tmp, result.uid).iterations
    assert all(r.analysis["parameters"]["files"] for r in rows)


# -- bluestem loop show ------------------------------------------------------------------
def test_loop_show_prints_the_iterations_from_a_journal(rig, capsys):
    from bluesky.utils import FailedStatus

    from bluestem.cli import main
    from bluestem.plans import closed_loop

    RE, mic, _d, _s, journal, _m, tmp = rig
    _refuse_beyond(mic.defocus, 25.0)
    uids = []
    RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
    with pytest.raises(FailedStatus):
        RE(closed_loop(ParabolaFocus(step=50.0), probe(mic), goal="focus",
                       settings={"mic_defocus": mic.defocus}, max_iterations=5,
                       converged=converged))  # fmt: skip
    journal.close()
    assert main(["loop", "show", uids[0][:8], "--journal", str(tmp / "journal")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"closed loop {uids[0]}: fail (PutRefused: ")
    assert "test_loop.ParabolaFocus" in out[1] and '"focus"' in out[2]
    (row,) = [line for line in out if line.startswith("  0  ")]
    assert "(no change)" in row and "mic_defocus=-20" in row and "sharpness=" in row
    assert row.split()[-1] == uids[1][:8]
    assert any(line.startswith("failure:  iteration 1, at set: PutRefused") for line in out)
    assert any(line.startswith("restore:  mic_defocus=-20 -> read back mic_defocus=-20: ok")
               for line in out)  # fmt: skip
    assert main(["loop", "show", uids[1], "--journal", str(tmp / "journal")]) == 2
    err = capsys.readouterr().err
    assert "not a closed loop" in err and f"acquisition 0 of loop {uids[0]}" in err
