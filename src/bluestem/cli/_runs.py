"""Finding one run by its uid or a unique prefix of it, in a catalogue or a journal.

Shared by the commands that read a stored run (``bluestem reduce``, ``bluestem loop
show``); a module starting with ``_`` is not a subcommand.
"""

from __future__ import annotations

__all__ = ["MAX_MATCHES", "_catalog_uids", "_unique"]

MAX_MATCHES = 100  # uids fetched for a prefix: enough to list an ambiguous one


def _unique(prefix: str, uids, where: str) -> str:
    """The one uid starting with ``prefix``, else a LookupError naming the matches."""
    matches = sorted({u for u in uids if u.startswith(prefix)})
    if not matches:
        raise LookupError(f"no run with uid {prefix!r} (or starting with it) in {where}")
    if len(matches) > 1:
        shown = ", ".join(matches[:10]) + (", ..." if len(matches) > 10 else "")
        raise LookupError(f"uid prefix {prefix!r} is ambiguous: {len(matches)} runs in "
                          f"{where} start with it ({shown}); give more characters")  # fmt: skip
    return matches[0]


def _catalog_uids(client, prefix: str) -> list[str]:
    """Keys of the catalogue's runs whose uid may start with ``prefix`` (a superset)."""
    import httpx
    from tiled.queries import Like

    try:
        # One SQL LIKE on the start document's uid (tiled's SQL catalogue supports it; no
        # key is listed). LIKE's '_' and '%' are wildcards and SQLite ignores case, so
        # this is a superset: _unique keeps the exact prefix matches.
        return list(client.search(Like("start.uid", prefix + "%")).keys()[:MAX_MATCHES])
    except httpx.HTTPStatusError as err:
        if err.response.status_code not in (400, 405, 422):
            raise
    # A server whose catalogue cannot run the query: list every key (slow when large).
    return [k for k in client if k.startswith(prefix)]
