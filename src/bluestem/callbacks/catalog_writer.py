"""A catalogue writer that never stops a run: TiledWriter on a thread of its own.

bluesky-tiled-plugins' ``TiledWriter`` talks HTTP inside the callback, so a slow or dead
catalogue would stall the RunEngine (tiled's client retries a refused connection for up
to ``TILED_RETRY_TIMEOUT`` = 45 s) or, if the error escaped, abort the run.  Here the
RunEngine only enqueues a copy of each document; a worker thread feeds ``TiledWriter``.
The first failure of a run is logged, the rest of that run is dropped, and the run is
marked unsynced in the :class:`~bluestem.journal.DocumentJournal` so that
``bluestem sync`` uploads it later.  A run whose stop document was written is marked
synced.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from bluestem.journal import DocumentJournal, mark_synced, mark_unsynced

__all__ = ["ResilientTiledWriter"]

logger = logging.getLogger(__name__)

_STOP_WORKER = object()


class ResilientTiledWriter:
    """Bluesky callback writing runs into Tiled without ever interrupting the run.

    Parameters
    ----------
    client : tiled client or callable returning one
        The catalogue root (``tiled.client.from_uri(URI, api_key=...)``), or a factory
        called on the worker thread when a run starts (so an unreachable catalogue at
        session start costs nothing and is retried at each run).
    journal : DocumentJournal, optional
        Where runs are marked synced / unsynced.  Subscribe the journal *before* this
        writer.
    batch_size : int
        Events / stream datums per TiledWriter write (100: see STACK-NOTES; 1 is
        3x slower on a 20-point scan).
    max_pending : int
        Documents allowed to queue up behind a slow catalogue; beyond that the run is
        given up (marked unsynced) rather than letting memory grow without bound.

    Attributes
    ----------
    failures : dict
        Start uid -> reason, for every run whose catalogue copy is missing or partial.
    synced : list
        Start uids written completely.
    runs : dict
        Start uid -> its journal file (or None), for every run given to the writer, in
        order; :meth:`pending` are those neither written nor given up yet.

    Notes
    -----
    Runs may interleave (bluesky's run keys: a closed loop's umbrella run stays open
    while its acquisitions open and close): each document is routed to its own run (by
    ``run_start``, or by the descriptor / resource it belongs to) and each run has its own
    TiledWriter. Documents are deep-copied because TiledWriter runs later, on another
    thread, than the other callbacks.
    """

    def __init__(
        self,
        client: Any | Callable[[], Any],
        *,
        journal: DocumentJournal | None = None,
        batch_size: int = 100,
        max_pending: int = 100_000,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._client = None if callable(client) and not hasattr(client, "context") else client
        self._factory = client if self._client is None else None
        self.journal = journal
        self.batch_size = int(batch_size)
        self.max_pending = int(max_pending)
        self.failures: dict[str, str] = {}
        #: Called as ``on_give_up(uid, reason)`` when a run is given up (the session
        #: tells operators: ``catalog_unreachable``); errors in it are logged.
        self.on_give_up: Callable[[str, str], None] | None = None
        self.synced: list[str] = []
        self.runs: dict[str, Any] = {}
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._open: list[str] = []  # start uids of the runs being enqueued (RunEngine side)
        self._owner: dict[str, str] = {}  # descriptor / resource uid -> start uid
        self._given_up: set[str] = set()  # runs whose further documents are dropped
        # worker-side state: one TiledWriter and document count per open run
        self._writers: dict[str, Any] = {}
        self._run_docs: dict[str, int] = {}

    # -- RunEngine side: never raises, never blocks -----------------------------------
    def __call__(self, name: str, doc: dict) -> None:
        try:
            if name == "start":
                self._open.append(doc["uid"])
                self.runs[doc["uid"]] = self.journal.path_for(doc) if self.journal else None
                self._ensure_thread()
            uid = self._run_of(name, doc)
            if uid is None or uid in self._given_up:
                return
            if self._queue.qsize() >= self.max_pending:
                self._give_up(uid, f"more than {self.max_pending} documents waiting")
                return
            self._queue.put((uid, name, copy.deepcopy(doc)))
            if name == "stop":
                self._open.remove(uid)
                self._owner = {k: v for k, v in self._owner.items() if v != uid}
        except Exception:  # the run must go on whatever happens here
            logger.exception("catalogue writer: could not queue %s document", name)

    def _run_of(self, name: str, doc: dict) -> str | None:
        """The start uid of the open run ``doc`` belongs to (None: no open run)."""
        if name == "start":
            return doc["uid"]
        uid = doc.get("run_start")
        if uid is not None:
            if name in ("descriptor", "resource", "stream_resource"):
                self._owner[doc["uid"]] = uid
        elif name in ("event", "event_page", "stream_datum"):
            uid = self._owner.get(doc.get("descriptor"))
        elif name == "datum":
            uid = self._owner.get(doc["datum_id"].split("/")[0])
        elif name == "datum_page":
            uid = self._owner.get(doc.get("resource"))
        elif len(self._open) == 1:
            uid = self._open[0]
        return uid if uid in self._open else None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued document is written or dropped; False on timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush (waiting at most ``timeout`` s), then stop the worker thread; True when
        everything queued was written or given up (see :meth:`pending`)."""
        if self._thread is None:
            return True
        flushed = self.flush(timeout)
        self._queue.put(_STOP_WORKER)
        if flushed:
            self._thread.join(timeout)
            self._thread = None
        # else: the worker is still in a catalogue call; it is a daemon thread and is
        # abandoned (the runs stay marked unsynced in the journal).
        return flushed

    def pending(self) -> list[str]:
        """Start uids of runs neither in the catalogue yet nor given up (oldest first)."""
        done = set(self.synced) | set(self.failures)
        return [uid for uid in self.runs if uid not in done]

    def give_up_pending(self, reason: str) -> None:
        """Record every :meth:`pending` run as not uploaded, with ``reason`` (journal
        ``.unsynced`` markers and :attr:`failures`)."""
        for uid in self.pending():
            self.failures[uid] = reason
            self._given_up.add(uid)
            path = self.runs.get(uid)
            if path is not None:
                try:
                    mark_unsynced(path, reason)
                except OSError:
                    logger.exception("catalogue writer: could not mark %s unsynced", uid)

    # -- worker side --------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._work, name="bluestem-catalog-writer", daemon=True
            )
            self._thread.start()

    def _give_up(self, uid: str, reason: str) -> None:
        with self._lock:
            if uid in self._given_up:
                return
            self._given_up.add(uid)
            self.failures[uid] = reason
        logger.error("catalogue writer: run %s not written to the catalogue: %s", uid, reason)
        if self.on_give_up is not None:
            try:
                self.on_give_up(uid, reason)
            except Exception as exc:
                logger.error("catalogue writer: on_give_up failed: %s: %s",
                             type(exc).__name__, exc)  # fmt: skip
        path = self.runs.get(uid)
        if self.journal is not None and path is not None:
            try:
                mark_unsynced(path, reason)
            except OSError:
                logger.exception("catalogue writer: could not mark %s unsynced", uid)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP_WORKER:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            uid, name, doc = item
            try:
                self._handle(uid, name, doc)
            except Exception as err:
                logger.exception("catalogue writer: %s document failed", name)
                self._give_up(uid, f"{name} document failed: {type(err).__name__}: {err}")
                self._writers.pop(uid, None)

    def _handle(self, uid: str, name: str, doc: dict) -> None:
        from bluestem.catalog.client import tiled_writer

        if name == "start":
            self._run_docs[uid] = 0
            if self._client is None:
                self._client = self._factory()
            self._writers[uid] = tiled_writer(self._client, batch_size=self.batch_size)
        writer = self._writers.get(uid)
        if uid in self._given_up or writer is None:
            return
        writer(name, doc)
        self._run_docs[uid] += 1
        if name == "stop":
            self.synced.append(uid)
            path = self.runs.get(uid)
            if path is not None:
                mark_synced(path, str(self._client.uri), self._run_docs.pop(uid))
            del self._writers[uid]
