"""The Tiled catalogue: server configuration, a server process helper, journal sync."""

from bluestem.catalog.config import server_config
from bluestem.catalog.server import CatalogServer, start_server
from bluestem.catalog.sync import RunResult, SyncReport, replay_run, sync_journal

__all__ = [
    "CatalogServer",
    "RunResult",
    "SyncReport",
    "replay_run",
    "server_config",
    "start_server",
    "sync_journal",
]
