"""The session's RunEngine gives every run that does not succeed a reason, and the
baseline's closing read never replaces the error that ended a run (ophyd.sim devices)."""

from __future__ import annotations

import threading
import time

import bluesky.plan_stubs as bps
import pytest
from bluesky.utils import Msg, RunEngineInterrupted
from ophyd.sim import SynAxis, SynGauss

from bluestem.session.baseline import Baseline
from bluestem.session.engine import ABORTED, HALTED, NOT_RESUMABLE, STOPPED, RunEngine


@pytest.fixture
def RE():
    engine = RunEngine({})
    engine.stops = []
    engine.subscribe(lambda name, doc: engine.stops.append(doc) if name == "stop" else None)
    return engine


def slow_run(steps: int = 50, checkpoint: bool = True):
    yield from bps.open_run()
    for _ in range(steps):
        if checkpoint:
            yield from bps.checkpoint()
        yield from bps.sleep(0.02)
    yield from bps.close_run()


def pause_soon(RE, delay: float = 0.2) -> None:
    threading.Timer(delay, RE.request_pause).start()


def test_abort_without_a_reason_records_one(RE):
    pause_soon(RE)
    with pytest.raises(RunEngineInterrupted):
        RE(slow_run())
    RE.abort()
    (stop,) = RE.stops
    assert stop["exit_status"] == "abort" and stop["reason"] == ABORTED


def test_an_abort_asked_for_is_logged_without_a_traceback(RE, caplog):
    pause_soon(RE)
    with pytest.raises(RunEngineInterrupted):
        RE(slow_run())
    RE.abort()
    (record,) = [r for r in caplog.records if r.getMessage().startswith("Run aborted")]
    assert record.exc_info is None and "RequestAbort: as requested" in record.getMessage()


def test_abort_keeps_the_reason_given(RE):
    pause_soon(RE)
    with pytest.raises(RunEngineInterrupted):
        RE(slow_run())
    RE.abort("beam lost")
    assert RE.stops[0]["reason"] == "beam lost"


def test_stop_is_a_success_that_says_it_was_cut_short(RE):
    pause_soon(RE)
    with pytest.raises(RunEngineInterrupted):
        RE(slow_run())
    RE.stop()
    (stop,) = RE.stops
    assert stop["exit_status"] == "success" and stop["reason"] == STOPPED


def test_halt_records_why(RE):
    pause_soon(RE)
    with pytest.raises(RunEngineInterrupted):
        RE(slow_run())
    RE.halt()
    (stop,) = RE.stops
    assert stop["exit_status"] == "abort" and stop["reason"] == HALTED


def test_a_pause_of_a_plan_that_cannot_resume_aborts_with_a_reason(RE):
    def unresumable():
        yield from bps.open_run()
        yield from bps.clear_checkpoint()
        for _ in range(50):
            yield from bps.sleep(0.02)
        yield from bps.close_run()

    pause_soon(RE)
    with pytest.raises(Exception):  # noqa: B017 - bluesky raises FailedPause/Interrupted
        RE(unresumable())
    (stop,) = RE.stops
    assert stop["exit_status"] == "abort" and stop["reason"] == NOT_RESUMABLE


def test_each_call_starts_rewindable(RE):
    def forbid():
        yield Msg("rewindable", None, False)
        yield from bps.null()

    RE(forbid())
    assert RE.rewindable is False  # bluesky keeps it across calls...
    RE(bps.null())
    assert RE.rewindable is True  # ...this RunEngine resets it at each call


class Dying(SynAxis):
    """A device that reads once, then its IOC is gone."""

    reads = 0

    def read(self):
        Dying.reads += 1
        if Dying.reads > 1:
            raise TimeoutError("mic_high_tension is not connected")
        return super().read()


def test_a_failed_closing_baseline_keeps_the_runs_own_reason(RE):
    Dying.reads = 0
    RE.preprocessors.append(Baseline([Dying(name="mic")]))
    det = SynGauss("det", SynAxis(name="m"), "m", center=0, Imax=1)

    def failing():
        yield from bps.open_run()
        yield from bps.trigger_and_read([det])
        yield from bps.close_run(exit_status="fail", reason="det: lost the detector IOC")

    RE(failing())
    (stop,) = RE.stops
    assert stop["exit_status"] == "fail" and stop["reason"] == "det: lost the detector IOC"
    assert stop["num_events"] == {"baseline": 1, "primary": 1}


def test_a_failed_closing_baseline_of_a_good_run_says_so(RE):
    Dying.reads = 0
    RE.preprocessors.append(Baseline([Dying(name="mic")]))
    RE(slow_run(steps=1))
    (stop,) = RE.stops
    assert stop["exit_status"] == "success"
    assert "the baseline after the run was not read" in stop["reason"]
    assert "mic_high_tension is not connected" in stop["reason"]


def test_the_baseline_reads_before_and_after(RE):
    RE.preprocessors.append(Baseline([SynAxis(name="mic")]))
    RE(slow_run(steps=1))
    assert RE.stops[0]["num_events"] == {"baseline": 2}
    with pytest.raises(ValueError, match="one or more devices"):
        Baseline([])


def test_a_deferred_pause_waits_for_a_checkpoint(RE):
    threading.Timer(0.2, lambda: RE.request_pause(defer=True)).start()
    t0 = time.monotonic()
    with pytest.raises(RunEngineInterrupted):
        RE(slow_run(steps=100))
    assert time.monotonic() - t0 < 1.5  # at the next checkpoint, not at the end (2 s)
    RE.resume()
    assert RE.stops[0]["exit_status"] == "success"


def _attempts(journal) -> list[dict]:
    import json

    return [json.loads(line) for line in journal.attempts_path.read_text().splitlines()]


def test_every_call_is_recorded_also_one_that_opens_no_run(RE, tmp_path):
    from bluestem.journal import DocumentJournal

    journal = DocumentJournal(tmp_path / "journal")
    RE.subscribe(journal)
    RE.attempts = journal

    def fails_before_its_run():
        yield from bps.null()
        raise ConnectionError("PFX:SCAN:ShapeX is not connected")
        yield from bps.open_run()

    with pytest.raises(ConnectionError):
        RE(fails_before_its_run())
    (uid,) = RE(slow_run(steps=2))
    pause_soon(RE, 0.1)
    with pytest.raises(RunEngineInterrupted):
        RE(slow_run(steps=50))
    RE.resume()

    first, second, paused, resumed = _attempts(journal)
    assert first["plan"] == "fails_before_its_run" and first["outcome"] == "failed"
    assert first["runs"] == [] and "before any run opened" in first["note"]
    assert first["error"] == "ConnectionError: PFX:SCAN:ShapeX is not connected"
    assert second["plan"] == "slow_run" and second["outcome"] == "finished"
    assert second["runs"] == [uid] and "error" not in second
    assert paused["outcome"] == "paused" and len(paused["runs"]) == 1
    assert resumed["plan"] == "RE.resume()" and resumed["outcome"] == "finished"
    assert all(a["seconds"] >= 0 and a["time"] > 0 for a in (first, second, paused, resumed))
    journal.close()


def test_no_journal_records_nothing_and_changes_nothing(RE):
    assert RE.attempts is None
    (uid,) = RE(slow_run(steps=1))
    assert RE.stops[-1]["run_start"] == uid
