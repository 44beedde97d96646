"""Bluesky callbacks: the document journal and the resilient catalogue writer."""

from bluestem.callbacks.catalog_writer import ResilientTiledWriter
from bluestem.callbacks.journal import (
    DocumentJournal,
    JournaledRun,
    JournalEncoder,
    find_runs,
    mark_synced,
    mark_unsynced,
    read_documents,
)

__all__ = [
    "DocumentJournal",
    "JournalEncoder",
    "JournaledRun",
    "ResilientTiledWriter",
    "find_runs",
    "mark_synced",
    "mark_unsynced",
    "read_documents",
]
