"""Which Channel Access servers stopped answering, so that ending a run does not wait on
each of their PVs in turn.

An IOC that hangs (SIGSTOP, a stuck host) keeps its TCP circuit open: the CA client
notices only after ``EPICS_CA_CONN_TMO`` + an echo timeout (36 s by default), and until
then every read waits its own timeout (2 s) and every put its own (5 s). Ending one raster
touches such a server a dozen times (stop the scan, stop the detector, wait for the file,
the final dropped-frame count, the closing baseline, unstage), which made a hung IOC cost
40 s before the plan failed. Once one read of a server timed out, the clean-up paths ask
:class:`Liveness` and skip that server's PVs, saying so in the log; the next run
(``stage``) tries again.

The key is the server's address (``host:port``, as the CA client connected to it), so
devices on other IOCs are not affected by one that hangs.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["Liveness", "Watchdog", "is_timeout", "server_of"]

logger = logging.getLogger(__name__)


def server_of(signal) -> str | None:
    """``host:port`` of the CA server behind an ophyd ``EpicsSignal`` (either control
    layer), or None if it is not connected or not an EPICS signal."""
    pv = getattr(signal, "_read_pv", None)
    if pv is None:
        return None
    caproto_pv = getattr(pv, "_caproto_pv", None)
    if caproto_pv is not None:  # caproto's pyepics-compatible shim
        try:
            host, port = caproto_pv.circuit_manager.circuit.address
        except (AttributeError, TypeError, ValueError):
            return None
        return f"{host}:{port}"
    host = getattr(pv, "host", None)  # pyepics: "host:port"
    return host if isinstance(host, str) and ":" in host else None


def is_timeout(exc: BaseException) -> bool:
    """True for an error that says the server did not answer in time (ophyd's
    ``ReadTimeoutError``, caproto's ``CaprotoTimeoutError``: both ``TimeoutError``s)."""
    return isinstance(exc, TimeoutError)


class Liveness:
    """Servers that stopped answering (a read or put timed out), with the first reason.

    One instance is shared by the devices of a session (``Session`` sets it), so the
    detector's timeout also spares the scan generator and the baseline the wait when
    they live in the same IOC. Thread-safe: the devices' status threads report here.
    """

    def __init__(self) -> None:
        self._lost: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def mark(self, signal, exc: BaseException) -> None:
        """Record that ``signal``'s server did not answer, if ``exc`` is a timeout."""
        server = server_of(signal)
        if server is None or not is_timeout(exc):
            return
        with self._lock:
            if server not in self._lost:
                why = f"{getattr(signal, 'pvname', signal)}: {type(exc).__name__}: {exc}"
                self._lost[server] = (why, time.monotonic())
                logger.error("CA server %s stopped answering (%s); its PVs are not waited "
                             "for until the next run", server, why)  # fmt: skip

    def lost(self, signal) -> str | None:
        """Why ``signal``'s server is taken as not answering, or None."""
        server = server_of(signal)
        if server is None:
            return None
        with self._lock:
            found = self._lost.get(server)
        if found is None:
            return None
        why, since = found
        return f"server {server} not answering for {time.monotonic() - since:.1f} s ({why})"

    def lost_device(self, device) -> str | None:
        """Why ``device``'s server (that of its first EPICS signal) is taken as not
        answering, or None."""
        for walk in device.walk_signals():
            if server_of(walk.item) is not None:
                return self.lost(walk.item)
        return None

    def clear(self) -> None:
        """Forget every server (a new run tries them all again)."""
        with self._lock:
            self._lost.clear()


class Watchdog:
    """Says when a progress value (a frame counter) has not changed for ``timeout`` s of
    unpaused time: the IOC answers, but its acquisition stopped. Until the value first
    changes, ``first`` s are allowed instead (default ``timeout``): the first frame of a
    scan may wait for the source to get ready (the twin builds its frame cache)."""

    def __init__(self, timeout: float, first: float | None = None):
        self.timeout = timeout
        self.first = timeout if first is None else max(first, timeout)
        self._last = None
        self._moved = False
        self._since = time.monotonic()

    @property
    def limit(self) -> float:
        """The seconds allowed now (``first`` until the value has changed once)."""
        return self.timeout if self._moved else self.first

    def stalled(self, progress, *, paused: bool = False) -> bool:
        """True once ``progress`` has stayed the same for more than :attr:`limit` s; a
        pause, and every change, restart the count."""
        now = time.monotonic()
        if progress != self._last:
            self._moved = self._moved or self._last is not None
            self._last, self._since = progress, now
            return False
        if paused:
            self._since = now
            return False
        return now - self._since > self.limit
