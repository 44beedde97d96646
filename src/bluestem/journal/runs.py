"""The journal's runs on disk: finding them, reading their documents, their markers.

See :mod:`bluestem.journal` for the layout. Every reader of a journal (``bluestem sync``,
``bluestem reduce --journal``, the session's summary) and the catalogue writer marking a
run synced use this module; :class:`bluestem.journal.DocumentJournal` writes the files.
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
    "JournalEncoder",
    "JournaledRun",
    "find_runs",
    "mark_synced",
    "mark_unsynced",
    "read_documents",
]

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class JournaledRun:
    """One run in the journal: its file and what its markers say."""

    uid: str
    path: Path

    @property
    def synced_marker(self) -> Path:
        """``<uid>.synced``: present once a catalogue holds the whole run."""
        return self.path.with_suffix(".synced")

    @property
    def unsynced_marker(self) -> Path:
        """``<uid>.unsynced``: why the catalogue copy is missing or partial."""
        return self.path.with_suffix(".unsynced")

    @property
    def synced(self) -> bool:
        """Whether the run has its ``.synced`` marker."""
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
