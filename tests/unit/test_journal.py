"""The append-only document journal: JSON of numpy, one file per run, fsync, crashes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count, scan
from ophyd.sim import det, motor

import bluestem.callbacks
import bluestem.journal
from bluestem.callbacks import ResilientTiledWriter
from bluestem.journal import (
    DocumentJournal,
    JournalEncoder,
    find_runs,
    mark_synced,
    read_documents,
)


def test_the_callbacks_re_export_the_journal():
    names = ("DocumentJournal", "JournalEncoder", "JournaledRun", "find_runs", "mark_synced",
             "mark_unsynced", "read_documents")  # fmt: skip
    for name in names:
        assert getattr(bluestem.callbacks, name) is getattr(bluestem.journal, name), name
        assert name in bluestem.callbacks.__all__ and name in bluestem.journal.__all__


def test_encoder_writes_numpy_as_plain_json():
    doc = {
        "a": np.float32(1.5),
        "b": np.int64(7),
        "c": np.arange(6, dtype=np.uint16).reshape(2, 3),
        "d": [np.bool_(True), (1, 2)],
        "e": np.array(2.25),
    }
    back = json.loads(json.dumps(doc, cls=JournalEncoder))
    assert back == {"a": 1.5, "b": 7, "c": [[0, 1, 2], [3, 4, 5]], "d": [True, [1, 2]], "e": 2.25}


def test_one_file_per_run_with_every_document(tmp_path):
    journal = DocumentJournal(tmp_path)
    seen: dict[str, list] = {}

    def collect(name, doc):
        seen.setdefault(journal_uid[0], []).append((name, doc))

    journal_uid = [None]

    def track(name, doc):
        if name == "start":
            journal_uid[0] = doc["uid"]

    RE = RunEngine({})
    RE.subscribe(track)
    RE.subscribe(journal)
    RE.subscribe(collect)
    uids = RE(count([det], 3)) + RE(scan([det], motor, 0, 1, 4), sample="SrTiO3")
    runs = {r.uid: r for r in find_runs(tmp_path)}
    assert set(runs) == set(uids)
    for uid in uids:
        run = runs[uid]
        # dated folder YYYY/MM/DD of the start document (UTC)
        assert len(run.path.relative_to(tmp_path).parts) == 4
        assert not run.in_progress()
        assert not run.synced
        got = list(run.documents())
        expected = json.loads(json.dumps(seen[uid], cls=JournalEncoder))
        assert [list(x) for x in got] == expected
        assert got[0][0] == "start" and got[-1][0] == "stop"
    scan_docs = list(runs[uids[1]].documents())
    assert scan_docs[0][1]["sample"] == "SrTiO3"
    events = [d for n, d in scan_docs if n == "event"]
    assert [e["data"]["motor"] for e in events] == pytest.approx([0, 1 / 3, 2 / 3, 1])


def test_fsync_at_start_stop_and_every_n_documents(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real(fd))
    journal = DocumentJournal(tmp_path, fsync_interval=3600, fsync_every=2)
    RE = RunEngine({})
    RE.subscribe(journal)
    RE(count([det], 4))  # start, descriptor, 4 events, stop = 7 documents
    # start; after docs 2 (desc+ev1) ... every 2nd; stop
    assert len(calls) == 1 + 2 + 1
    journal_every = DocumentJournal(tmp_path / "b", fsync_interval=3600, fsync_every=1000)
    calls.clear()
    RE.subscribe(journal_every)
    RE(count([det], 4))
    assert len(calls) == 4 + 2  # the first journal as before, the second: start and stop only


def test_bad_parameters_are_named(tmp_path):
    with pytest.raises(ValueError, match="fsync_interval"):
        DocumentJournal(tmp_path, fsync_interval=0)
    with pytest.raises(ValueError, match="fsync_every"):
        DocumentJournal(tmp_path, fsync_every=0)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_runs(tmp_path / "nowhere")


def _crashed_run(tmp_path):
    """A run whose session died after two events: no stop, a torn last line."""
    journal = DocumentJournal(tmp_path)
    docs = []

    def stop_after_two_events(name, doc):
        docs.append((name, doc))

    RE = RunEngine({})
    RE.subscribe(stop_after_two_events)
    RE(count([det], 2))
    for name, doc in docs[:-1]:  # everything but the stop document
        journal(name, doc)
    (run,) = find_runs(tmp_path)
    assert run.in_progress()  # the live journal holds the lock
    journal.close()  # the process dies: the kernel drops the lock
    with open(run.path, "ab") as f:
        f.write(b'{"name": "event", "doc": {"trunc')
    return run, docs


def test_crashed_run_is_readable_and_no_longer_in_progress(tmp_path, caplog):
    run, docs = _crashed_run(tmp_path)
    assert not run.in_progress()
    got = list(read_documents(run.path))
    assert [n for n, _ in got] == [n for n, _ in docs[:-1]]
    assert "cut short" in caplog.text


def test_markers(tmp_path):
    run, _ = _crashed_run(tmp_path)
    assert [r.uid for r in find_runs(tmp_path, unsynced_only=True)] == [run.uid]
    mark_synced(run.path, "http://x", 4)
    assert run.synced
    assert json.loads(run.synced_marker.read_text())["documents"] == 4
    assert find_runs(tmp_path, unsynced_only=True) == []


class _DeadCatalogue:
    """A client whose every call fails as an unreachable server would."""

    uri = "http://127.0.0.1:9/api/v1/metadata/"
    context = None

    def include_data_sources(self):
        return self

    def create_container(self, *a, **k):
        raise ConnectionRefusedError("catalogue unreachable")


@pytest.mark.filterwarnings("ignore:The callback:UserWarning")
def test_dead_catalogue_never_interrupts_the_run(tmp_path, caplog):
    journal = DocumentJournal(tmp_path)
    writer = ResilientTiledWriter(_DeadCatalogue(), journal=journal)
    stops = []
    RE = RunEngine({})
    RE.subscribe(journal)
    RE.subscribe(writer)
    RE.subscribe(lambda n, d: stops.append(d) if n == "stop" else None)
    (uid,) = RE(count([det], 5))
    assert writer.flush(30)
    writer.close(30)
    assert stops[0]["exit_status"] == "success"
    assert "catalogue unreachable" in writer.failures[uid]
    (run,) = find_runs(tmp_path)
    assert not run.synced
    assert "catalogue unreachable" in json.loads(run.unsynced_marker.read_text())["reason"]
    assert sum(1 for n, _ in run.documents() if n == "event") == 5


def test_unreachable_at_start_is_retried_per_run(tmp_path):
    calls = []

    def factory():
        calls.append(1)
        raise ConnectionRefusedError("down")

    writer = ResilientTiledWriter(factory, journal=DocumentJournal(tmp_path))
    RE = RunEngine({})
    RE.subscribe(writer.journal)
    RE.subscribe(writer)
    uids = RE(count([det], 1)) + RE(count([det], 1))
    writer.close(30)
    assert len(calls) == 2
    assert set(writer.failures) == set(uids)
    with pytest.raises(ValueError, match="batch_size"):
        ResilientTiledWriter(factory, batch_size=0)


def test_interleaved_runs_each_reach_their_own_writer(tmp_path, monkeypatch):
    """A closed loop's umbrella run stays open (its own run key) while an acquisition
    opens and closes inside it: every document goes to its own run's TiledWriter."""
    import bluesky.plan_stubs as bps
    import bluesky.preprocessors as bpp

    import bluestem.catalog.client

    received: list[list[tuple[str, dict]]] = []

    def recorder(client, *, batch_size=100):
        docs: list[tuple[str, dict]] = []
        received.append(docs)
        return lambda name, doc: docs.append((name, doc))

    monkeypatch.setattr(bluestem.catalog.client, "tiled_writer", recorder)

    class _Client:
        uri = "http://catalogue.invalid/api/v1/"

    journal = DocumentJournal(tmp_path)
    writer = ResilientTiledWriter(lambda: _Client(), journal=journal)

    def umbrella(plan):
        return bpp.set_run_key_wrapper(plan, "umbrella")

    def plan():
        outer = yield from umbrella(bps.open_run(md={"role": "umbrella"}))
        yield from umbrella(bps.trigger_and_read([det], name="iterations"))
        inner = yield from count([det], 3, md={"role": "acquisition"})
        yield from umbrella(bps.trigger_and_read([det], name="iterations"))
        yield from umbrella(bps.close_run())
        return outer, inner

    RE = RunEngine({})
    RE.subscribe(journal)
    RE.subscribe(writer)
    RE(plan())
    assert writer.close(30)
    by_role = {docs[0][1]["role"]: docs for docs in received}
    assert set(by_role) == {"umbrella", "acquisition"}
    for role, docs in by_role.items():
        start = docs[0][1]["uid"]
        assert [n for n, _ in docs][-1] == "stop", role
        assert all(d.get("run_start", start) == start for n, d in docs
                   if n in ("descriptor", "stop")), role  # fmt: skip
        descriptors = {d["uid"] for n, d in docs if n == "descriptor"}
        events = [d for n, d in docs if n == "event"]
        assert events and all(e["descriptor"] in descriptors for e in events), role
    assert sum(n == "event" for n, _ in by_role["umbrella"]) == 2
    assert sum(n == "event" for n, _ in by_role["acquisition"]) == 3
    assert sorted(writer.synced) == sorted(d[0][1]["uid"] for d in received)
    assert all(run.synced for run in find_runs(tmp_path))


@pytest.mark.filterwarnings("ignore:The callback:UserWarning")
def test_a_run_given_up_is_told_to_the_notifier(tmp_path):
    from bluestem.notify import Notifier, Severity

    told = []
    notifier = Notifier([told.append])
    writer = ResilientTiledWriter(_DeadCatalogue(), journal=DocumentJournal(tmp_path))
    writer.on_give_up = notifier.catalog_gave_up
    RE = RunEngine({})
    RE.subscribe(writer.journal)
    RE.subscribe(writer)
    (uid,) = RE(count([det], 2))
    writer.close(30)
    (event,) = told
    assert event.kind == "catalog_unreachable" and event.severity == Severity.WARNING
    assert uid[:8] in event.message and "catalogue unreachable" in event.message
    assert "bluestem sync" in event.message and event.details == {"run": uid}
