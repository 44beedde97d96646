"""Run a device action on a thread and report it through an ophyd status.

Device actions that wait on the IOC (put completion, readback polling, capture ending)
must not block the RunEngine, so each runs on a daemon thread whose outcome finishes or
fails the returned status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ophyd.status import DeviceStatus

__all__ = ["status_of_thread", "wait_until"]


def status_of_thread(device, work: Callable[[], None], what: str) -> DeviceStatus:
    """Start ``work()`` on a daemon thread; the status finishes when it returns and
    fails with its exception if it raises."""
    status = DeviceStatus(device)

    def run() -> None:
        try:
            work()
        except Exception as exc:
            status.set_exception(exc)
        else:
            status.set_finished()

    threading.Thread(target=run, name=f"{what}-{device.name}", daemon=True).start()
    return status


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, *, poll: float) -> None:
    """Return once ``predicate()`` is true; ``TimeoutError(f"{what} after {timeout} s")``
    otherwise.

    The IOC usually answers within milliseconds: it polls at 2, 4, 8 ... ms up to
    ``poll`` s, so arming and opening a file do not cost a whole ``poll`` each.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:g} s")
        time.sleep(delay)
        delay = min(poll, 2 * delay)
