"""Talking to a catalogue: connecting (one place for the errors users see) and the one
TiledWriter configuration every writer of the project uses."""

from __future__ import annotations

__all__ = ["CatalogUnavailable", "connect", "tiled_writer"]


def tiled_writer(client, *, batch_size: int = 100):
    """bluesky-tiled-plugins' TiledWriter as bluestem configures it.

    ``max_array_size=0``: every array in an event (a derived run's virtual images) is
    stored as a Tiled array. TiledWriter's default puts arrays of up to 16 elements in the
    event table instead, and a 4 x 4 image then fails the whole run ("Can only convert
    1-dimensional array values ... to a variable-sized list").
    """
    from bluesky_tiled_plugins import TiledWriter

    return TiledWriter(client, batch_size=batch_size, max_array_size=0)


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
