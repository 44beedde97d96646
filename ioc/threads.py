"""The frame path's threads: a lower scheduling priority than the asyncio thread's."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["FRAME_PATH_NICE", "lower_thread_priority", "run_in_background_thread"]

# Niceness of the frame-path threads: on a machine with fewer cores than busy threads the
# kernel then runs the asyncio thread first, so puts stay responsive at full frame rate.
FRAME_PATH_NICE = 10


def lower_thread_priority(nice: int = FRAME_PATH_NICE) -> None:
    """Lower the calling thread's scheduling priority (Linux: per thread; threads it
    starts inherit it).  Best effort: silently ignored where unsupported."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def run_in_background_thread(func: Callable[[], Any]) -> Any:
    """Call ``func`` in a fresh low-priority thread and wait for it: threads ``func``
    starts (e.g. a writer's) inherit the low priority.  Blocking: use from a thread."""
    result: dict[str, Any] = {}

    def target():
        lower_thread_priority()
        try:
            result["value"] = func()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name="bluestem-frame-path-start")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
