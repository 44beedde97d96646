"""The process around a soft IOC: data directory, duplicate check, serving, signals.

Not a subcommand (the leading underscore keeps :mod:`bluestem.cli`'s discovery away from
it): ``bluestem ioc NAME`` commands share these steps whatever PVs they serve.  Only
caproto and :mod:`bluestem.ioc.ordered_server` (the caproto server context) are imported
here, and only inside the functions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Callable, Iterable, Mapping

__all__ = ["SEARCH_TIMEOUT", "find_server", "prepare_data_dir", "serve", "serve_instrument"]

# How long the duplicate check waits for an answer before concluding that nobody serves
# the PV: every IOC start pays it once.  A loopback reply takes well under 1 ms; the
# search is sent SEARCH_SENDS times within the timeout, so one lost datagram on a busy
# machine is not enough to miss a server.
SEARCH_TIMEOUT = 0.5  # s
SEARCH_SENDS = 3
SWITCH_INTERVAL = 5e-4  # s


def prepare_data_dir(path: str | os.PathLike) -> str:
    """Create ``path`` if missing (``mkdir -p``) and check that files can be written there.

    Parameters
    ----------
    path : path
        The data directory asked for.

    Returns
    -------
    str
        Its absolute path.

    Raises
    ------
    ValueError
        Naming the path and why it cannot be used (not creatable, not a directory, not
        writable).
    """
    path = os.path.abspath(os.fspath(path))
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"{path} exists and is not a directory") from None
    except OSError as exc:
        raise ValueError(f"{path} cannot be created: {exc.strerror}") from None
    # Writing a (nameless) file is the only check that covers permissions, read-only
    # mounts and ACLs alike; os.access() answers "yes" to root on most of them.
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ValueError(f"{path} is not writable: {exc.strerror}") from None
    return path


def find_server(pvname: str, timeout: float = SEARCH_TIMEOUT) -> tuple[str, int] | None:
    """Address of a server that answers a Channel Access search for ``pvname``.

    One search, sent where this process's ``EPICS_CA_*`` environment sends searches
    (``EPICS_CA_ADDR_LIST``, ``EPICS_CA_AUTO_ADDR_LIST``, ``EPICS_CA_SERVER_PORT``),
    with caproto's synchronous client on a socket of its own; no repeater is started.

    Parameters
    ----------
    pvname : str
        The full PV name.
    timeout : float
        Seconds to wait for an answer.

    Returns
    -------
    (host, port) or None
        The answering server's TCP address, or None when nobody answered in time.

    Raises
    ------
    OSError
        When a search could not be sent (caproto's ``CaprotoNetworkError`` is one).
    """
    import caproto as ca
    from caproto.sync.client import search

    sock = ca.bcast_socket()
    try:
        return search(pvname, sock, timeout, max_retries=SEARCH_SENDS)
    except ca.CaprotoTimeoutError:
        return None
    finally:
        sock.close()


def serve(
    pvdb: Mapping,
    *,
    name: str,
    interfaces: Iterable[str],
    banner: Callable[[list[str], int, int], str],
    shutdown: Callable[[], None],
) -> int:
    """Serve ``pvdb`` until SIGTERM, SIGINT or SIGHUP (unless ignored, as under ``nohup``),
    then run ``shutdown``; returns 0.

    The asyncio loop is this function's own, and it installs its own SIGTERM and SIGINT
    handlers, so a signal disposition inherited from the parent (a shell starts
    background jobs with SIGINT ignored) does not decide whether the IOC can be stopped.

    Parameters
    ----------
    pvdb : mapping
        caproto PV database.
    name : str
        The command, starting the line printed when a signal stops it.
    interfaces : iterable of str
        Addresses served.
    banner : callable
        ``banner(interfaces, ca_server_port, tcp_port) -> str``, printed (and flushed) to
        stdout once the UDP and TCP sockets are bound and listening.
    shutdown : callable
        Called once the server has stopped, while the signal handlers are still
        installed (a second signal cannot interrupt it), and also when serving fails.
    """
    return asyncio.run(_serve(pvdb, name, list(interfaces), banner, shutdown))


async def _serve(pvdb, name, interfaces, banner, shutdown) -> int:
    from bluestem.ioc.ordered_server import OrderedContext

    loop = asyncio.get_running_loop()
    # A put's completion after the monitor updates it caused, as a record's (libca
    # clients read a monitored value right after caput(wait=True)).
    ctx = OrderedContext(pvdb, interfaces)

    async def announce(async_lib) -> None:
        # Context.run calls the hook after binding the UDP search sockets and starting
        # the TCP accept loops (tasks created, and so run, before this one).
        print(banner(ctx.interfaces, ctx.ca_server_port, ctx.port), flush=True)

    server = asyncio.create_task(ctx.run(startup_hook=announce))
    stopping: list[int] = []

    def stop(signum: int) -> None:
        # Once only: cancelling again would interrupt caproto's own orderly shutdown.
        if not stopping:
            stopping.append(signum)
            server.cancel()

    signals = [signal.SIGTERM, signal.SIGINT]
    # A closed terminal (or dropped ssh session) sends SIGHUP, whose default kills the
    # process with its file open; under nohup it is ignored on purpose, and stays so.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signals.append(signal.SIGHUP)
    for signum in signals:
        loop.add_signal_handler(signum, stop, signum)
    try:
        # Context.run absorbs its cancellation and returns; a cancel that lands before
        # it started raises here instead.
        await server
    except asyncio.CancelledError:
        if not stopping:
            raise
    finally:
        shutdown()
    if stopping:
        print(f"{name}: stopped by {signal.Signals(stopping[0]).name}", flush=True)
    return 0


def serve_instrument(ioc, prefix: str, interfaces, data_dir: str, command: str) -> int:
    """Serve ``ioc`` (an Instrument) until SIGTERM or SIGINT, refusing to be the second
    server of ``prefix``; the exit code."""
    import sys

    # Two servers of one prefix on one network both answer, and a client silently gets
    # whichever replies first: refuse to be the second.
    probe = ioc.status.pvname
    try:
        other = find_server(probe)
    except OSError as exc:
        # An unreachable address in EPICS_CA_ADDR_LIST must not keep the IOC down.
        print(f"{command}: warning: duplicate-prefix search failed: {exc}", file=sys.stderr)
        other = None
    if other is not None:
        print(
            f"{command}: prefix {prefix!r} is already served by {other[0]}:{other[1]} "
            f"(it answered a search for {probe}); nothing served. Stop that IOC or choose "
            "another --prefix.",
            file=sys.stderr,
        )
        return 2

    # The frame path runs in threads that hold the GIL in short bursts (h5py, numpy); a
    # short switch interval lets the asyncio thread answer puts within a few ms while
    # they run (the default 5 ms interval, paid several times per put, gave ~20 ms).
    sys.setswitchinterval(SWITCH_INTERVAL)

    def banner(interfaces: list[str], ca_port: int, tcp_port: int) -> str:
        return (
            f"{command}: serving {len(ioc.pvdb)} PVs with prefix {prefix} on "
            f"{', '.join(interfaces)} (CA server port {ca_port}, TCP port {tcp_port}); "
            f"data directory {data_dir}; ready"
        )

    return serve(
        ioc.pvdb,
        name=command,
        interfaces=interfaces,
        banner=banner,
        shutdown=ioc.shutdown,
    )
