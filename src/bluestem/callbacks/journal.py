"""An append-only journal of every bluesky document, one JSON Lines file per run.

The journal is the record of last resort: it is written before any catalogue sees a
document, it needs nothing but a local disk, and ``bluestem sync`` rebuilds a catalogue
copy of any run from it.

Layout (documented in docs/catalog.md)::

    DIR/YYYY/MM/DD/<start uid>.jsonl      every document, one line {"name": ..., "doc": ...}
    DIR/YYYY/MM/DD/<start uid>.synced     marker: the catalogue holds the whole run (JSON)
    DIR/YYYY/MM/DD/<start uid>.unsynced   marker: not (fully) in a catalogue yet (JSON, reason)

The date is the UTC date of the start document.  A run is *unsynced* while it has no
``.synced`` marker; the ``.unsynced`` marker records why.  Every run gets an
``.unsynced`` marker at its start ("not uploaded to a catalogue yet"), replaced by
``.synced`` once a catalogue holds it, so a run that never reached the catalogue (no
catalogue, or a session that ended first) says so in the journal.  While a run is being
written its file holds an exclusive ``flock``, so ``bluestem sync`` can tell a run in
progress from one whose writer crashed (the kernel drops the lock with the process).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:  # POSIX only; elsewhere a run in progress simply cannot be detected.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = [
    "NOT_UPLOADED",
    "DocumentJournal",
    "JournalEncoder",
    "JournaledRun",
    "find_runs",
    "mark_synced",
    "mark_unsynced",
    "read_documents",
]

logger = logging.getLogger(__name__)

#: The reason a run's ``.unsynced`` marker gives from its start until a catalogue has it.
NOT_UPLOADED = "not uploaded to a catalogue yet (bluestem sync uploads it)"


class JournalEncoder(json.JSONEncoder):
    """JSON encoder that writes numpy scalars and arrays as plain numbers and lists."""

    def default(self, o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        if isinstance(o, Path):
            return str(o)
        return super().default(o)


class _OpenRun:
    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "ab")  # noqa: SIM115 (kept open for the run's lifetime)
        if fcntl is not None:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.unsynced_docs = 0
        self.last_sync = time.monotonic()
        self.count = 0

    def fsync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.unsynced_docs = 0
        self.last_sync = time.monotonic()

    def close(self) -> None:
        self.fsync()
        self.file.close()  # releases the flock


class DocumentJournal:
    """Bluesky callback appending every document to ``DIR/YYYY/MM/DD/<uid>.jsonl``.

    Parameters
    ----------
    directory : path
        Journal root; created if missing.
    fsync_interval : float
        Seconds between fsyncs while a run goes on (also fsynced at start and stop).
    fsync_every : int
        Fsync after this many documents even if ``fsync_interval`` has not passed.

    Notes
    -----
    Subscribe it before any catalogue writer so that a document is on disk before
    anything else can fail on it.  A failure of the journal itself (disk full) is
    raised: losing the record of last resort must stop the run, unlike a catalogue
    outage.
    """

    def __init__(
        self, directory: str | os.PathLike, *, fsync_interval: float = 1.0, fsync_every: int = 500
    ):
        if fsync_interval <= 0:
            raise ValueError(f"fsync_interval must be > 0 s, got {fsync_interval}")
        if fsync_every < 1:
            raise ValueError(f"fsync_every must be >= 1, got {fsync_every}")
        self.directory = Path(directory)
        self.fsync_interval = float(fsync_interval)
        self.fsync_every = int(fsync_every)
        self._runs: dict[str, _OpenRun] = {}
        self._owner: dict[str, str] = {}  # descriptor / resource uid -> start uid
        self._encoder = JournalEncoder(separators=(",", ":"))

    def path_for(self, start_doc: dict) -> Path:
        """The journal file of the run that ``start_doc`` opens."""
        day = time.strftime("%Y/%m/%d", time.gmtime(start_doc.get("time", time.time())))
        return self.directory / day / f"{start_doc['uid']}.jsonl"

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            path = self.path_for(doc)
            path.parent.mkdir(parents=True, exist_ok=True)
            run = self._runs[doc["uid"]] = _OpenRun(path)
            self._write(run, name, doc)
            run.fsync()
            mark_unsynced(path, NOT_UPLOADED)
            return
        uid = self._run_of(name, doc)
        run = self._runs.get(uid) if uid else None
        if run is None:
            logger.warning("journal: %s document of no open run dropped", name)
            return
        self._write(run, name, doc)
        if name == "stop":
            run.close()
            del self._runs[uid]
            self._owner = {k: v for k, v in self._owner.items() if v != uid}
        elif (
            run.unsynced_docs >= self.fsync_every
            or time.monotonic() - run.last_sync >= self.fsync_interval
        ):
            run.fsync()

    def close(self) -> None:
        """Fsync and close every run still open (their files keep no stop document)."""
        for run in self._runs.values():
            run.close()
        self._runs.clear()

    def _write(self, run: _OpenRun, name: str, doc: dict) -> None:
        line = self._encoder.encode({"name": name, "doc": doc}) + "\n"
        run.file.write(line.encode())
        run.unsynced_docs += 1
        run.count += 1

    def _run_of(self, name: str, doc: dict) -> str | None:
        if "run_start" in doc:
            uid = doc["run_start"]
            if name in ("descriptor", "resource", "stream_resource"):
                self._owner[doc["uid"]] = uid
            return uid
        if name in ("event", "event_page", "stream_datum"):
            return self._owner.get(doc["descriptor"])
        if name == "datum":
            return self._owner.get(doc["datum_id"].split("/")[0])
        if name == "datum_page":
            return self._owner.get(doc["resource"])
        # A lone open run is the only candidate for anything else.
        return next(iter(self._runs)) if len(self._runs) == 1 else None


@dataclass(frozen=True)
class JournaledRun:
    """One run in the journal: its file and what its markers say."""

    uid: str
    path: Path

    @property
    def synced_marker(self) -> Path:
        return self.path.with_suffix(".synced")

    @property
    def unsynced_marker(self) -> Path:
        return self.path.with_suffix(".unsynced")

    @property
    def synced(self) -> bool:
        return self.synced_marker.exists()

    def in_progress(self) -> bool:
        """True while a live :class:`DocumentJournal` still holds this run's file."""
        if fcntl is None:
            return False
        with open(self.path, "rb") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False

    def documents(self) -> Iterator[tuple[str, dict]]:
        """The journaled documents in order (see :func:`read_documents`)."""
        return read_documents(self.path)


def find_runs(directory: str | os.PathLike, *, unsynced_only: bool = False) -> list[JournaledRun]:
    """Every run journaled under ``directory`` (oldest file first)."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"journal directory {str(directory)!r} does not exist")
    runs = [JournaledRun(p.stem, p) for p in root.rglob("*.jsonl")]
    runs.sort(key=lambda r: (r.path.stat().st_mtime, r.uid))
    return [r for r in runs if not (unsynced_only and r.synced)]


def read_documents(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """Yield ``(name, doc)`` from a journal file.

    A last line cut short by a crash (no newline, or not JSON) is skipped with a
    warning: every complete line before it is still a valid document.
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                logger.warning("%s: line %d cut short (crash?), ignored", path, number)
                return
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number} is not JSON: {err}") from err
            yield entry["name"], entry["doc"]


def _write_marker(path: Path, content: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(content, cls=JournalEncoder))
    os.replace(tmp, path)  # atomic: a marker is either whole or absent


def mark_synced(run_path: str | os.PathLike, catalog: str, documents: int) -> None:
    """Record that the catalogue ``catalog`` holds the run journaled at ``run_path``."""
    path = Path(run_path)
    _write_marker(
        path.with_suffix(".synced"),
        {"catalog": catalog, "documents": documents, "time": time.time()},
    )
    path.with_suffix(".unsynced").unlink(missing_ok=True)


def mark_unsynced(run_path: str | os.PathLike, reason: str) -> None:
    """Record why the catalogue copy of the run at ``run_path`` is missing or partial."""
    path = Path(run_path)
    path.with_suffix(".synced").unlink(missing_ok=True)
    _write_marker(path.with_suffix(".unsynced"), {"reason": reason, "time": time.time()})
