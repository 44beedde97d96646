"""Replay journaled runs into a Tiled catalogue (``bluestem sync``).

Policy, per unsynced run of the journal:

* a run whose catalogue copy already has its stop document is *complete*: it is not
  written again, only marked synced;
* a run with no copy is uploaded; a *partial* copy (no stop document: the catalogue
  failed mid-run) is deleted first and the whole run uploaded again from the journal;
* a run still being written (its journal file is locked by a live journal) is left alone;
* a run whose journal has no stop document (the session crashed) is uploaded with a stop
  document made up here, ``exit_status="abort"`` and a reason saying so; the journal file
  itself is never modified.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bluestem.journal import JournaledRun, find_runs, mark_synced

__all__ = ["RunResult", "SyncReport", "replay_run", "sync_journal"]

logger = logging.getLogger(__name__)

SYNTHESIZED_REASON = "journal ended without a stop document; stop synthesized by bluestem sync"


@dataclass
class RunResult:
    """What sync did with one run: status is uploaded, replaced, complete, in-progress
    or failed."""

    uid: str
    status: str
    documents: int = 0
    detail: str = ""


@dataclass
class SyncReport:
    """Results of one sync, run by run."""

    results: list[RunResult] = field(default_factory=list)

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.results if r.status == "failed"]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        lines = [
            f"{r.uid}  {r.status:<11} {r.documents:>6} docs  {r.detail}" for r in self.results
        ]
        total = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to sync"
        lines.append(f"sync: {len(self.results)} run(s): {total}")
        return "\n".join(lines)


def replay_run(client: Any, run: JournaledRun, *, batch_size: int = 100) -> RunResult:
    """Write one journaled run into the catalogue ``client`` (see the module policy).

    Raises whatever the catalogue raises; :func:`sync_journal` turns that into a failed
    result.
    """
    from bluestem.catalog.client import tiled_writer

    status = "uploaded"
    if run.uid in client:
        if "stop" in (client[run.uid].metadata or {}):
            return RunResult(run.uid, "complete", detail="catalogue copy already complete")
        # Partial copy: internal tables included, or a re-upload would clash with them.
        client.delete_contents(run.uid, recursive=True, external_only=False)
        status = "replaced"
    writer = tiled_writer(client, batch_size=batch_size)
    count = 0
    last: dict | None = None
    stopped = False
    for name, doc in run.documents():
        writer(name, doc)
        count += 1
        last = doc
        stopped = stopped or name == "stop"
    if count == 0:
        raise ValueError(f"{run.path}: journal file is empty")
    detail = ""
    if not stopped:
        writer(
            "stop",
            {
                "uid": str(uuid.uuid4()),
                "run_start": run.uid,
                "time": (last or {}).get("time", time.time()),
                "exit_status": "abort",
                "reason": SYNTHESIZED_REASON,
                "num_events": {},
            },
        )
        detail = "no stop in journal: stored as aborted"
    return RunResult(run.uid, status, count, detail)


def sync_journal(
    directory: str | os.PathLike,
    client: Any,
    *,
    batch_size: int = 100,
    catalog_name: str | None = None,
) -> SyncReport:
    """Replay every unsynced run of the journal at ``directory`` into ``client``.

    Each run is independent: one that fails is reported and stays unsynced, the others
    go on.  Successful runs get a ``.synced`` marker naming ``catalog_name`` (default the
    client's URI).
    """
    report = SyncReport()
    catalog_name = catalog_name or str(getattr(client, "uri", "catalogue"))
    for run in find_runs(directory, unsynced_only=True):
        if run.in_progress():
            report.results.append(RunResult(run.uid, "in-progress", detail="being journaled"))
            continue
        try:
            result = replay_run(client, run, batch_size=batch_size)
        except Exception as err:
            logger.exception("sync of %s failed", run.uid)
            report.results.append(
                RunResult(run.uid, "failed", detail=f"{type(err).__name__}: {err}")
            )
            continue
        mark_synced(run.path, catalog_name, result.documents)
        report.results.append(result)
    return report
