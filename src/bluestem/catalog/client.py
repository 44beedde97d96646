"""Connecting to a catalogue from the command line: one place for the errors users see."""

from __future__ import annotations

__all__ = ["CatalogUnavailable", "connect"]


class CatalogUnavailable(RuntimeError):
    """The catalogue cannot be used: unreachable, or the API key was refused."""


def connect(uri: str, api_key: str | None):
    """A Tiled client for ``uri`` that is known to read (one key listed).

    Raises
    ------
    CatalogUnavailable
        Naming the URI and why (the key refused, an HTTP status, no answer).
    """
    import httpx
    from tiled.client import from_uri

    if not api_key:
        raise CatalogUnavailable(
            f"catalogue {uri}: an API key is required (--api-key or $BLUESTEM_API_KEY)"
        )
    try:
        client = from_uri(uri, api_key=api_key)
        # from_uri alone does not prove the key can read: list one key.
        list(client.keys()[:1])
    except httpx.HTTPStatusError as err:
        code = err.response.status_code
        why = "the API key was refused" if code in (401, 403) else f"HTTP {code}"
        raise CatalogUnavailable(f"catalogue {uri}: {why} ({err})") from None
    except RuntimeError as err:
        # tiled raises this (not a 401) when the server says the key does not authenticate.
        if "API key" not in str(err):
            raise
        raise CatalogUnavailable(f"catalogue {uri}: the API key was refused") from None
    except (httpx.HTTPError, OSError, ValueError) as err:
        raise CatalogUnavailable(f"cannot reach catalogue {uri}: {err}") from None
    return client
