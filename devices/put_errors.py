"""A refused put fails at once, with the IOC's message, instead of timing out.

When an IOC refuses a write-with-notification (``WRITE_NOTIFY``), the CA server answers
with a CA ``ERROR`` message (``ECA_PUTFAIL``) that repeats the request's header (and so
its IOID) and carries the server's text. libca matches such an error to the pending
request and fails its put callback. caproto 1.3's threading client (the one ophyd's
caproto control layer uses) does not: it logs the error and leaves the request pending,
so ``put(wait=True)`` raised ``CaprotoTimeoutError`` seconds later and the IOC's reason
(``'/x' does not exist or is not a directory``) never reached the session.

:func:`install_put_error_handling` teaches the threading client what libca does: an
``ErrorResponse`` whose original request is a pending ``WriteNotifyRequest`` completes
that request, and a waiting ``PV.write`` raises
:class:`PutRefused` with the IOC's message. A put issued with a callback and no wait is
never reported complete when refused (its callback is not called; the error is logged):
bluestem's devices always put with ``wait=True`` on a thread (:func:`put_checked`).

It patches two methods of ``caproto.threading.client`` (pinned caproto ``>=1.3,<1.4``),
once per process, when it is called: never at import time.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from caproto import ErrorResponseReceived
from ophyd import EpicsSignal

__all__ = ["CheckedSignal", "PutRefused", "install_put_error_handling", "put_checked"]

logger = logging.getLogger(__name__)

_installed = False
_lock = threading.Lock()
# "Python exception: InvalidSetting PV: text" -> "PV: text" (caproto's server wording)
_PREFIX = re.compile(r"^Python exception: (?:InvalidSetting )?")


class PutRefused(ErrorResponseReceived):
    """The IOC refused a write; ``pvname`` and the IOC's ``message``."""

    def __init__(self, pvname: str, message: str):
        self.pvname, self.message = pvname, message
        text = message if pvname in message else f"{pvname}: {message}"
        super().__init__(f"{text} (refused by the IOC)")


def _message(response) -> str:
    raw = bytes(response.error_message).split(b"\0", 1)[0].decode("latin-1", "replace")
    return _PREFIX.sub("", raw.strip()) or f"refused ({response.status.name})"


def install_put_error_handling() -> None:
    """Make caproto's threading client fail a refused put at once (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        import caproto as ca
        from caproto.threading import client

        process = client.VirtualCircuitManager._process_command
        write = client.PV.write

        def _process_command(self, command):
            if isinstance(command, ca.ErrorResponse):
                request = command.original_request
                pending = request.command == ca.WriteNotifyRequest.ID
                info = self.ioids.get(request.parameter2) if pending else None
                if info is not None:
                    self.ioids.pop(request.parameter2, None)
                    info["response"] = command
                    if info.get("event") is not None:
                        info["event"].set()
                    elif info.get("callback") is not None:
                        logger.error("%s: %s", info["pv"].name, _message(command))
                    return None
            return process(self, command)

        def _write(self, *args, **kwargs):
            response = write(self, *args, **kwargs)
            if isinstance(response, ca.ErrorResponse):
                raise PutRefused(self.name, _message(response))
            return response

        _write.__doc__ = write.__doc__
        client.VirtualCircuitManager._process_command = _process_command
        client.PV.write = _write
        _installed = True


def put_checked(signal, value: Any, *, timeout: float) -> None:
    """``signal.put(value, wait=True)``: raises :class:`PutRefused` naming the PV and
    the IOC's reason as soon as the IOC refuses (caproto control layer)."""
    import ophyd

    if getattr(ophyd.cl, "name", "") == "caproto":
        install_put_error_handling()
    signal.put(value, wait=True, timeout=timeout)


class CheckedSignal(EpicsSignal):
    """An EpicsSignal whose ``set()`` is a put with completion on a thread: the status
    fails with :class:`PutRefused` when the IOC refuses (ophyd's own put-completion
    ``set()`` would wait forever for a refused put)."""

    def set(self, value, *, timeout=None, settle_time=None):
        from .threaded import status_of_thread

        limit = 10.0 if timeout is None else float(timeout)
        return status_of_thread(self, lambda: put_checked(self, value, timeout=limit), "put")
