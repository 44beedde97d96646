"""The live reduction's run state, and the messages its worker thread is sent.

:class:`RunState` is one run being reduced by :class:`bluestem.callbacks.LiveReduction`;
its docstring says which thread owns (writes) each field. The worker's own findings are a
:class:`WorkerRecord` that the worker thread alone writes. The RunEngine's thread sends
the worker :class:`Watch` and :class:`Reduce` messages and, at the stop document,
:data:`DONE`; each message does its own work (``handle``), so the worker never asks what
it was sent, nor what executor it drives.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bluestem.reduce.executors import Block, ReductionExecutor

__all__ = ["DONE", "Reduce", "RunState", "Watch", "WorkerRecord"]


@dataclass
class WorkerRecord:
    """What the worker thread did in one run: every field is written by that thread alone.

    The stop document reads ``error`` after joining the thread; ``snapshot()`` (any thread)
    reads ``frames`` and ``latest``; ``lags`` and ``reduced`` are the public
    ``LiveReduction.lags`` and ``LiveReduction.reduced``.
    """

    error: Exception | None = None  # the first failure; later messages are drained
    frames: int = 0  # frames in the images (the executor's progress)
    latest: np.ndarray | None = None  # the latest frame reduced
    lags: list[float] = field(default_factory=list)
    reduced: list[tuple[str, float]] = field(default_factory=list)

    def progress(self, frames: int, latest: np.ndarray) -> None:
        """The executor's ``on_progress``: called on the worker thread."""
        self.frames += frames
        self.latest = latest


@dataclass
class RunState:
    """One run being reduced, and which thread owns (writes) each field.

    - ``start``, ``spec``, ``shape``, ``executor``, ``inbox``, ``worker``: bound by the
      start document (RunEngine thread) before the worker starts; never rebound.
    - ``resources``, ``per_event``, ``announced``: written and read by the document
      (RunEngine) thread only; blocks reach the worker as messages through ``inbox``.
    - ``worker``'s fields: written by the worker thread only (see ``WorkerRecord``).

    The executor is driven by the worker thread until it has ended, then by the stop
    document (``reduce_late``, ``result``, ``close``); ``live_images`` from any thread.
    """

    start: dict
    spec: Any
    shape: tuple[int, int]
    executor: ReductionExecutor
    inbox: queue.Queue = field(default_factory=queue.Queue)
    worker: WorkerRecord = field(default_factory=WorkerRecord)
    resources: dict[str, dict] = field(default_factory=dict)
    per_event: dict[tuple[str, str], int] = field(default_factory=dict)
    announced: list[Block] = field(default_factory=list)  # what the raw run holds


@dataclass(frozen=True)
class Watch:
    """Queued at a fly raster's StreamResource: follow this file from its first frame."""

    block: Block
    verb = "watching"

    def handle(self, run: RunState, clock: Callable[[], float]) -> None:
        run.executor.watch(self.block)


@dataclass(frozen=True)
class Reduce:
    """Queued at each stream_datum: reduce the block it announces."""

    block: Block
    verb = "reducing"

    def handle(self, run: RunState, clock: Callable[[], float]) -> None:
        run.executor.reduce(self.block)
        run.worker.lags.append(clock() - self.block.received_at)
        run.worker.reduced.append((self.block.datum, time.time()))


DONE = object()  # queued at the stop document: the worker ends
