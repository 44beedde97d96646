"""Replaying journaled runs into an in-process Tiled catalogue (no server process)."""

from __future__ import annotations

import pytest
from bluesky import RunEngine
from bluesky.plans import count, scan
from ophyd.sim import det, motor
from tiled.catalog import from_uri
from tiled.client import Context, from_context
from tiled.queries import Contains, Key
from tiled.server.app import build_app

from bluestem.catalog.sync import SYNTHESIZED_REASON, sync_journal
from bluestem.journal import DocumentJournal, find_runs


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    d = tmp_path_factory.mktemp("catalogue")
    (d / "data").mkdir()
    tree = from_uri(
        f"sqlite:///{d}/catalog.db",
        writable_storage=[str(d / "data"), f"duckdb:///{d}/tabular.duckdb"],
        init_if_not_exists=True,
    )
    with Context.from_app(build_app(tree)) as context:
        yield from_context(context)


def _journaled(tmp_path, plan, **md):
    journal = DocumentJournal(tmp_path)
    RE = RunEngine({})
    RE.subscribe(journal)
    (uid,) = RE(plan, **md)
    return uid


def test_sync_uploads_then_leaves_complete_runs_alone(catalogue, tmp_path):
    uid = _journaled(tmp_path, scan([det], motor, -1, 1, 5), sample="SrTiO3")
    report = sync_journal(tmp_path, catalogue)
    assert [(r.uid, r.status) for r in report.results] == [(uid, "uploaded")]
    run = catalogue[uid]
    assert run.metadata["start"]["sample"] == "SrTiO3"
    assert run.metadata["stop"]["exit_status"] == "success"
    # The searches docs/catalog.md shows.
    t = run.metadata["start"]["time"]
    assert uid in catalogue.search(Key("start.sample") == "SrTiO3")
    assert uid in catalogue.search(Key("start.plan_name") == "scan")
    assert uid in catalogue.search(Contains("start.detectors", "det"))
    assert uid not in catalogue.search(Contains("start.detectors", "other"))
    assert uid in catalogue.search(Key("start.time") >= t - 1).search(Key("start.time") < t + 1)
    assert uid not in catalogue.search(Key("start.time") > t + 1)
    assert list(run["primary"].read()["motor"].values) == pytest.approx([-1, -0.5, 0, 0.5, 1])
    (journaled,) = find_runs(tmp_path)
    assert journaled.synced
    assert sync_journal(tmp_path, catalogue).results == []  # nothing unsynced is left
    journaled.synced_marker.unlink()  # lost marker: the catalogue copy is complete
    assert [r.status for r in sync_journal(tmp_path, catalogue).results] == ["complete"]
    assert journaled.synced


def test_partial_copy_is_replaced(catalogue, tmp_path):
    uid = _journaled(tmp_path, count([det], 4))
    (journaled,) = find_runs(tmp_path)
    start = next(doc for name, doc in journaled.documents() if name == "start")
    catalogue.create_container(key=uid, metadata={"start": start})  # what a crash leaves
    report = sync_journal(tmp_path, catalogue)
    assert [r.status for r in report.results] == ["replaced"]
    run = catalogue[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert len(run["primary"].read()["det"]) == 4


def test_run_without_stop_is_stored_as_aborted(catalogue, tmp_path):
    docs = []
    RE = RunEngine({})
    RE.subscribe(lambda n, d: docs.append((n, d)))
    (uid,) = RE(count([det], 3))
    journal = DocumentJournal(tmp_path)
    for name, doc in docs[:-1]:
        journal(name, doc)
    # Still being written: sync leaves it alone.
    assert [r.status for r in sync_journal(tmp_path, catalogue).results] == ["in-progress"]
    assert uid not in catalogue
    journal.close()  # the session dies without a stop document
    (result,) = sync_journal(tmp_path, catalogue).results
    assert result.status == "uploaded"
    assert result.documents == len(docs) - 1
    stop = catalogue[uid].metadata["stop"]
    assert stop["exit_status"] == "abort"
    assert stop["reason"] == SYNTHESIZED_REASON
    assert len(catalogue[uid]["primary"].read()["det"]) == 3


def test_a_failing_run_does_not_stop_the_others(catalogue, tmp_path):
    good = _journaled(tmp_path, count([det], 2))
    bad_path = tmp_path / "2000" / "01" / "01" / "broken-run.jsonl"
    bad_path.parent.mkdir(parents=True)
    bad_path.write_text("not json\n")
    report = sync_journal(tmp_path, catalogue)
    status = {r.uid: r.status for r in report.results}
    assert status == {good: "uploaded", "broken-run": "failed"}
    assert "line 1 is not JSON" in report.failed[0].detail
    assert "1 failed" in report.summary()
    assert not bad_path.with_suffix(".synced").exists()
