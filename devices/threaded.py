"""Run a device action on a thread and report it through an ophyd status.

Device actions that wait on the IOC (put completion, readback polling, capture ending)
must not block the RunEngine, so each runs on a daemon thread whose outcome finishes or
fails the returned status.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ophyd.status import DeviceStatus

__all__ = ["status_of_thread"]


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
