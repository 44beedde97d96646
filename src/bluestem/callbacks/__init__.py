"""Bluesky callbacks: the document journal (from :mod:`bluestem.journal`), the resilient
catalogue writer, the live reduction with its derived runs, live images and the progress
bar."""

from bluestem.callbacks.catalog_writer import ResilientTiledWriter
from bluestem.callbacks.derived_run import derived_run_documents
from bluestem.callbacks.live_images import LiveImages, save_image_pngs
from bluestem.callbacks.live_reduction import LiveReduction
from bluestem.callbacks.loop_view import LoopView
from bluestem.callbacks.progress import ProgressBar
from bluestem.journal import (
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
    "LiveImages",
    "LiveReduction",
    "LoopView",
    "ProgressBar",
    "ResilientTiledWriter",
    "derived_run_documents",
    "find_runs",
    "mark_synced",
    "mark_unsynced",
    "read_documents",
    "save_image_pngs",
]
