"""The catalogue dies mid-run: the run goes on, the journal keeps it, ``bluestem sync``
(a real subprocess) uploads it to a restarted server."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import tiled.client.utils
from bluesky import RunEngine
from bluesky.plans import count
from ophyd.sim import det
from tiled.client import from_uri

from bluestem.callbacks import DocumentJournal, JournalEncoder, ResilientTiledWriter, find_runs
from bluestem.catalog import start_server

pytestmark = pytest.mark.system

SYNC = [
    sys.executable,
    "-P",
    "-c",
    "import sys; from bluestem.cli import main; sys.exit(main())",
    "sync",
]
N_EVENTS = 20
KILL_AFTER = 6


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """One run during which the catalogue server is SIGKILLed after KILL_AFTER events."""
    root = tmp_path_factory.mktemp("sync")
    key = secrets.token_hex(16)
    server = start_server(root / "cat", api_key=key)
    mp = pytest.MonkeyPatch()
    # tiled retries a refused connection for up to 45 s (TILED_RETRY_TIMEOUT); the
    # writer thread would only notice the dead server later, the run is not held up
    # either way: shorten it so the test does not wait.
    mp.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 2)
    mp.setattr(tiled.client.utils, "TILED_RETRY_TIMEOUT", 2.0)
    journal = DocumentJournal(root / "journal")
    writer = ResilientTiledWriter(from_uri(server.uri, api_key=key), journal=journal)
    produced = []

    def kill_server(name, doc):
        if name == "event" and doc["seq_num"] == KILL_AFTER:
            # Let the writer put the first part of the run in the catalogue, so that a
            # partial copy is left behind for sync to replace.
            writer.flush(60)
            server.kill()

    RE = RunEngine({})
    RE.subscribe(journal)
    RE.subscribe(writer)
    RE.subscribe(lambda name, doc: produced.append((name, doc)))
    RE.subscribe(kill_server)
    try:
        (uid,) = RE(count([det], N_EVENTS), sample="SrTiO3")
        flushed = writer.flush(120)
    finally:
        mp.undo()
        server.stop()
    restarted = start_server(root / "cat", api_key=key)
    yield {
        "uid": uid,
        "produced": produced,
        "writer": writer,
        "flushed": flushed,
        "journal": root / "journal",
        "server": restarted,
        "key": key,
        "dead": server,
    }
    restarted.stop()


def test_run_finished_despite_the_dead_catalogue(interrupted):
    assert not interrupted["dead"].alive()
    stop = interrupted["produced"][-1]
    assert stop[0] == "stop" and stop[1]["exit_status"] == "success"
    assert interrupted["flushed"]
    assert interrupted["uid"] in interrupted["writer"].failures


def test_journal_holds_every_document(interrupted):
    (run,) = find_runs(interrupted["journal"])
    assert run.uid == interrupted["uid"]
    assert not run.synced
    assert "ConnectError" in json.loads(run.unsynced_marker.read_text())["reason"]
    expected = json.loads(json.dumps(interrupted["produced"], cls=JournalEncoder))
    assert [list(entry) for entry in run.documents()] == expected


def test_sync_with_wrong_key_fails_cleanly_and_touches_nothing(interrupted):
    before = snapshot(interrupted["journal"])
    result = subprocess.run(
        [*SYNC, "--journal", str(interrupted["journal"]), "--catalog",
         interrupted["server"].uri, "--api-key", "not-the-key"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "API key was refused" in result.stderr
    assert snapshot(interrupted["journal"]) == before


def test_sync_missing_journal_is_named(interrupted, tmp_path):
    result = subprocess.run(
        [*SYNC, "--journal", str(tmp_path / "nope"), "--catalog", interrupted["server"].uri,
         "--api-key", interrupted["key"]],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "nope" in result.stderr


def sync_from_env(env_vars: dict, *args: str) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUESTEM_")}
    return subprocess.run([*SYNC, *args], capture_output=True, text=True, timeout=120,
                          env={**env, **env_vars})  # fmt: skip


def test_sync_reads_the_catalogue_key_and_journal_from_the_environment(interrupted, tmp_path):
    server, key = interrupted["server"], interrupted["key"]
    # The URI and the key reach the server: the wrong key is refused by it.
    result = sync_from_env({"BLUESTEM_JOURNAL_DIR": str(interrupted["journal"]),
                            "BLUESTEM_CATALOG_URI": server.uri,
                            "BLUESTEM_API_KEY": "notthekey"})  # fmt: skip
    assert result.returncode == 2 and "API key was refused" in result.stderr
    assert server.uri in result.stderr
    # The journal directory is $BLUESTEM_JOURNAL_DIR (the old $BLUESTEM_JOURNAL is not read).
    result = sync_from_env({"BLUESTEM_JOURNAL_DIR": str(tmp_path / "env-journal"),
                            "BLUESTEM_JOURNAL": str(interrupted["journal"]),
                            "BLUESTEM_CATALOG_URI": server.uri,
                            "BLUESTEM_API_KEY": key})  # fmt: skip
    assert result.returncode == 2 and "env-journal" in result.stderr
    # Flags win over the environment.
    result = sync_from_env({"BLUESTEM_JOURNAL_DIR": str(interrupted["journal"]),
                            "BLUESTEM_CATALOG_URI": server.uri, "BLUESTEM_API_KEY": key},
                           "--journal", str(tmp_path / "flag-journal"))  # fmt: skip
    assert result.returncode == 2 and "flag-journal" in result.stderr
    result = sync_from_env({"BLUESTEM_API_KEY": key}, "--journal", str(interrupted["journal"]))
    assert result.returncode == 2
    assert "no catalogue (--catalog or $BLUESTEM_CATALOG_URI)" in result.stderr


def test_sync_uploads_the_whole_run(interrupted):
    uid, key = interrupted["uid"], interrupted["key"]
    client = from_uri(interrupted["server"].uri, api_key=key)
    assert "stop" not in client[uid].metadata  # the partial copy the dead server kept
    result = subprocess.run(
        [*SYNC, "--journal", str(interrupted["journal"]), "--catalog",
         interrupted["server"].uri, "--api-key", key],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{uid}  replaced" in result.stdout
    assert "1 replaced" in result.stdout
    (run,) = find_runs(interrupted["journal"])
    assert run.synced and not run.unsynced_marker.exists()

    catalogued = from_uri(interrupted["server"].uri, api_key=key)[uid]
    assert catalogued.metadata["stop"]["exit_status"] == "success"
    assert catalogued.metadata["start"]["sample"] == "SrTiO3"
    events = [doc for name, doc in run.documents() if name == "event"]
    assert len(events) == N_EVENTS
    table = catalogued["primary"].read()
    assert list(table["det"].values) == pytest.approx([e["data"]["det"] for e in events])
    exported = [name for name, _ in catalogued.documents()]
    journaled = [name for name, _ in run.documents()]
    assert exported.count("start") == exported.count("stop") == 1
    assert sum(1 for n in exported if n in ("event", "event_page")) >= 1
    assert len(exported) == len(journaled)

    # A second sync finds nothing left to do.
    again = subprocess.run(
        [*SYNC, "--journal", str(interrupted["journal"]), "--catalog",
         interrupted["server"].uri, "--api-key", key],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0
    assert "nothing to sync" in again.stdout


def test_a_sync_configured_by_the_environment_alone(interrupted):
    """After test_sync_uploads_the_whole_run (module order): the same journal and
    catalogue, given only as $BLUESTEM_JOURNAL_DIR, $BLUESTEM_CATALOG_URI and
    $BLUESTEM_API_KEY, are found and have nothing left to sync."""
    (run,) = find_runs(interrupted["journal"])
    assert run.synced
    result = sync_from_env({"BLUESTEM_JOURNAL_DIR": str(interrupted["journal"]),
                            "BLUESTEM_CATALOG_URI": interrupted["server"].uri,
                            "BLUESTEM_API_KEY": interrupted["key"]})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "nothing to sync" in result.stdout
