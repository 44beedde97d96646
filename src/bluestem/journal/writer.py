"""The document journal's writer: every bluesky document appended to its run's file.

:class:`DocumentJournal` is a bluesky callback (a plain ``(name, doc)`` callable): it
writes the layout described in :mod:`bluestem.journal`, holds an exclusive ``flock`` on a
run's file while the run is written, and marks every run ``.unsynced`` at its start.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from bluestem.journal.runs import JournalEncoder, mark_unsynced

try:  # POSIX only; elsewhere a run in progress simply cannot be detected.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["NOT_UPLOADED", "DocumentJournal"]

logger = logging.getLogger(__name__)

#: The reason a run's ``.unsynced`` marker gives from its start until a catalogue has it.
NOT_UPLOADED = "not uploaded to a catalogue yet (bluestem sync uploads it)"


#: Bytes kept in ``DIR/.reserve`` and given up when the journal's disk is full, so that
#: the runs in progress can still write their stop documents.
RESERVE_BYTES = 1024**2


def _append_whole(fd: int, data: bytes, size: int) -> None:
    """Append ``data`` to the file of ``fd`` (now ``size`` bytes long) whole, or cut the
    file back to ``size`` and raise: never a torn last line."""
    done = 0
    try:
        while done < len(data):
            done += os.write(fd, data[done:])
    except OSError:
        os.ftruncate(fd, size)
        raise


class _OpenRun:
    def __init__(self, path: Path):
        self.path = path
        # Unbuffered: each document is one write of whole lines, which append() undoes
        # if it fails part-way, so the file never ends in a torn line.
        self.file = open(path, "ab", buffering=0)  # noqa: SIM115 (open for the run)
        if fcntl is not None:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.size = os.fstat(self.file.fileno()).st_size
        self.unsynced_docs = 0
        self.last_sync = time.monotonic()
        self.count = 0

    def append(self, data: bytes) -> None:
        """Write ``data`` whole, or leave the file as it was and raise."""
        _append_whole(self.file.fileno(), data, self.size)
        self.size += len(data)

    def fsync(self) -> None:
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
    reserve_bytes : int
        Size of ``DIR/.reserve``, a file the journal deletes when its disk is full so
        that the documents in flight (a run's stop document) still fit; 0: none.

    Notes
    -----
    Subscribe it before any catalogue writer so that a document is on disk before
    anything else can fail on it.  A failure of the journal itself (disk full) is
    raised: losing the record of last resort must stop the run, unlike a catalogue
    outage. On a full disk the reserve is given up first (logged as an error) and the
    write tried again; a write that still fails leaves the run's file as it was before
    that document (never a torn last line) and raises ``OSError`` naming the file.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        fsync_interval: float = 1.0,
        fsync_every: int = 500,
        reserve_bytes: int = RESERVE_BYTES,
    ):
        if fsync_interval <= 0:
            raise ValueError(f"fsync_interval must be > 0 s, got {fsync_interval}")
        if fsync_every < 1:
            raise ValueError(f"fsync_every must be >= 1, got {fsync_every}")
        if not 0 <= reserve_bytes <= 1024**3:
            raise ValueError(f"reserve_bytes must be in [0, 1 GiB], got {reserve_bytes}")
        self.directory = Path(directory)
        self.fsync_interval = float(fsync_interval)
        self.fsync_every = int(fsync_every)
        self._runs: dict[str, _OpenRun] = {}
        self._owner: dict[str, str] = {}  # descriptor / resource uid -> start uid
        self._encoder = JournalEncoder(separators=(",", ":"))
        self.reserve_bytes = int(reserve_bytes)
        self.reserve = self.directory / ".reserve"

    def _keep_reserve(self) -> None:
        """(Re)create the reserve if it is missing and the disk has room (else later)."""
        if not self.reserve_bytes or self.reserve.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
            finally:
                os.close(fd)
        except OSError as exc:
            self.reserve.unlink(missing_ok=True)
            logger.warning("journal: no room for the %d-byte reserve in %s (%s)",
                           self.reserve_bytes, self.directory, exc)  # fmt: skip

    def path_for(self, start_doc: dict) -> Path:
        """The journal file of the run that ``start_doc`` opens."""
        day = time.strftime("%Y/%m/%d", time.gmtime(start_doc.get("time", time.time())))
        return self.directory / day / f"{start_doc['uid']}.jsonl"

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self._keep_reserve()
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

    @property
    def attempts_path(self) -> Path:
        """``DIR/attempts.log``: one JSON line per plan the session's RunEngine was
        asked to run, with its outcome (also plans that failed before any run opened).
        Not ``.jsonl``: that suffix names a run's file."""
        return self.directory / "attempts.log"

    def record_attempt(self, record: dict) -> None:
        """Append one attempt (a JSON line) to :attr:`attempts_path`, fsynced."""
        self.directory.mkdir(parents=True, exist_ok=True)
        line = (self._encoder.encode(record) + "\n").encode()
        fd = os.open(self.attempts_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _append_whole(fd, line, os.fstat(fd).st_size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Fsync and close every run still open (their files keep no stop document)."""
        for run in self._runs.values():
            run.close()
        self._runs.clear()

    def _write(self, run: _OpenRun, name: str, doc: dict) -> None:
        line = (self._encoder.encode({"name": name, "doc": doc}) + "\n").encode()
        try:
            run.append(line)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or not self.reserve.exists():
                raise OSError(exc.errno, f"journal {run.path}: the {name} document was not "
                              f"written ({exc.strerror}); the file keeps the {run.count} "
                              "before it") from exc  # fmt: skip
            self.reserve.unlink()
            logger.error("journal: the disk of %s is full: gave up the %d-byte reserve "
                         "to write the %s document of %s", self.directory,
                         self.reserve_bytes, name, run.path.name)  # fmt: skip
            self._write(run, name, doc)
            return
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
