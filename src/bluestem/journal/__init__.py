"""bluestem.journal — an append-only journal of every bluesky document, one file per run.

The journal is the record of last resort: it is written before any catalogue sees a
document, it needs nothing but a local disk, and ``bluestem sync`` rebuilds a catalogue
copy of any run from it. It sits below both the catalogue (:mod:`bluestem.catalog`
replays and marks journaled runs) and the callbacks (:mod:`bluestem.callbacks`
re-exports these names, and its catalogue writer marks runs synced), and imports neither.

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

Modules: :mod:`.writer` (:class:`DocumentJournal`), :mod:`.runs` (finding and reading
journaled runs, their markers). Depends on numpy only.
"""

from bluestem.journal.runs import (
    JournaledRun,
    JournalEncoder,
    find_runs,
    mark_synced,
    mark_unsynced,
    read_documents,
)
from bluestem.journal.writer import NOT_UPLOADED, DocumentJournal

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
