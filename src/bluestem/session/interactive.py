"""A session for an interactive shell: built, announced, and closed at exit.

``bluestem shell`` builds the session *before* IPython starts, so a session that cannot
be built (a wrong prefix, an IOC that is not running) ends the command with the error
and a non-zero exit status instead of an IPython without ``RE``. A plain
``ipython --profile-dir=profiles/profile_bluestem`` cannot be stopped from a startup file:
it starts explicitly *degraded* (``session = None``) and says so in a banner.

At exit the session waits (bounded: ``catalog.exit_timeout``) for the catalogue writer and
says which runs are left for ``bluestem sync``.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["DEGRADED", "default_config", "session_namespace"]

DEGRADED = (
    "bluestem: NO SESSION: {error}\n"
    "  RE, the devices and the plans are NOT defined in this shell (session is None).\n"
    "  Fix the inventory or start the IOC, then restart; `bluestem shell` refuses to\n"
    "  start in this state."
)


def default_config() -> str:
    """``$BLUESTEM_CONFIG``, else ``profiles/sim.yml`` of the source tree."""
    return os.environ.get("BLUESTEM_CONFIG") or str(
        Path(__file__).resolve().parents[3] / "profiles" / "sim.yml"
    )


def _banner(session) -> str:
    cfg = session.config
    devices = ", ".join(f"{n} ({d.prefix})" for n, d in session.devices.items())
    where = [f"devices {devices}"]
    where.append(f"catalogue {cfg.catalog['uri']}" if cfg.catalog else "no catalogue")
    if session.journal is not None:
        where.append(f"journal {session.journal.directory}")
    return "bluestem session ready: " + "; ".join(where)


def session_namespace(config: Any = None, *, degraded: bool = False) -> dict:
    """Build the session from ``config`` (default :func:`default_config`) and return the
    names for the shell (:meth:`~bluestem.session.Session.namespace`); register its
    :meth:`~bluestem.session.Session.close_at_exit` with ``atexit``.

    Parameters
    ----------
    degraded : bool
        On a failure, print :data:`DEGRADED` and return ``{"session": None, ...}``
        instead of raising (for IPython startup files, which cannot stop IPython).
    """
    from bluestem.session import build_session

    try:
        session = build_session(config if config is not None else default_config())
    except Exception as exc:
        if not degraded:
            raise
        print(DEGRADED.format(error=f"{type(exc).__name__}: {exc}"), file=sys.stderr,
              flush=True)  # fmt: skip
        return {"session": None, "bluestem_error": exc}
    atexit.register(session.close_at_exit)
    print(_banner(session), flush=True)
    return session.namespace()
