"""A real ``bluestem serve`` process: API key enforced, a RunEngine run read back over HTTP."""

from __future__ import annotations

import secrets

import httpx
import pytest
from bluesky import RunEngine
from bluesky.plans import scan
from ophyd.sim import det, motor
from tiled.client import from_uri
from tiled.queries import Key

from bluestem.callbacks import DocumentJournal, ResilientTiledWriter, find_runs
from bluestem.catalog import start_server

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    raw = root / "raw"
    raw.mkdir()
    handle = start_server(root / "cat", api_key=secrets.token_hex(16), raw_dirs=[raw])
    yield handle
    # SIGTERM ends in a clean exit, not death by the signal (-15).
    assert handle.stop() == 0
    assert not handle.alive()


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Apikey wrong-key"}], ids=["no-key", "wrong-key"]
)
def test_requests_without_the_key_get_401(server, headers):
    response = httpx.get(f"{server.uri}/api/v1/metadata/", headers=headers)
    assert response.status_code == 401


def test_request_with_the_key_gets_200(server):
    headers = {"Authorization": f"Apikey {server.api_key}"}
    response = httpx.get(f"{server.uri}/api/v1/metadata/", headers=headers)
    assert response.status_code == 200
    assert response.json()["data"]["id"] == ""


def test_runengine_run_reads_back_over_http(server, tmp_path):
    journal = DocumentJournal(tmp_path / "journal")
    writer = ResilientTiledWriter(
        lambda: from_uri(server.uri, api_key=server.api_key), journal=journal
    )
    produced = []
    RE = RunEngine({})
    RE.subscribe(journal)
    RE.subscribe(writer)
    RE.subscribe(lambda name, doc: produced.append((name, doc)))
    (uid,) = RE(scan([det], motor, -1, 1, 7), sample="SrTiO3", operator="ada")
    assert writer.flush(60)
    assert writer.failures == {}
    assert writer.synced == [uid]
    (journaled,) = find_runs(tmp_path / "journal")
    assert journaled.synced

    client = from_uri(server.uri, api_key=server.api_key)
    assert uid in client.search(Key("start.sample") == "SrTiO3")
    assert uid not in client.search(Key("start.sample") == "Si")
    start = next(doc for name, doc in produced if name == "start")
    assert uid in client.search(Key("start.time") >= start["time"] - 1)
    run = client[uid]
    assert run.metadata["start"]["operator"] == "ada"
    assert run.metadata["start"]["plan_name"] == "scan"
    assert run.metadata["stop"]["exit_status"] == "success"
    table = run["primary"].read()
    events = [doc for name, doc in produced if name == "event"]
    for key in ("det", "motor"):
        assert list(table[key].values) == pytest.approx([e["data"][key] for e in events])
    # The json_seq exporter is configured: the run comes back as its documents.
    names = [name for name, _ in run.documents()]
    assert names.count("event") + names.count("event_page") >= 1
    assert names[0] == "start" and names[-1] == "stop"
