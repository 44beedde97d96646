"""LiveReduction: reduce a 4D run's frames as the detector announces them.

The router follows the documents: the start document carries the reduction spec (the
plans record it, see ``reductions=``), ``stream_resource`` names the raw HDF5 file and
``stream_datum`` announces the scan rows written. Each announced block is queued to a
worker thread, which hands it to the run's executor
(:class:`bluestem.reduce.executors.ReductionExecutor`: by default a
:class:`~bluestem.reduce.executors.LocalExecutor`, which reads it from the file with SWMR
direct chunk reads, checksums verified, and reduces it with numba kernels that release the
GIL), so the RunEngine's thread only ever enqueues. At the stop document the router waits
for the worker, adds the DPC images and emits a derived run (linked by ``parent_uid``) to
its sinks, on the RunEngine's thread, like any other run's documents.

The router knows the executor only by that interface: what an executor cannot do (follow
a file ahead of its announcements, show partial images, report progress) its defaults
make a no-op.

Why a thread and not a process behind bluesky's 0MQ proxy: measured in
``benchmarks/live_lag.py`` and recorded in ``docs/live.md``.

The same router reprocesses a stored run: ``bluestem reduce`` replays the stored documents
into it (optionally with a :class:`~bluestem.reduce.executors.DaskExecutor`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from event_model import DocumentRouter

from bluestem.callbacks._run_state import DONE, Reduce, RunState, Watch, WorkerRecord
from bluestem.callbacks.derived_run import add_dpc, derived_run_documents, final_images
from bluestem.reduce.executors import Block, LocalExecutor, ReductionExecutor, covered, frames_in

__all__ = ["LiveReduction"]

logger = logging.getLogger(__name__)

# How long the thread waits for an announcement before reading on in the file (s).
FOLLOW_INTERVAL = 0.02
# The live DPC image waits for this many finite 2 x 2 neighbourhoods of the COM field (a
# few scan rows): a rotation estimated from the first row or two is noise.
LIVE_DPC_NEIGHBOURHOODS = 256


def _path(uri: str) -> str:
    prefix = "file://localhost"
    if uri.startswith(prefix):
        return uri[len(prefix) :]
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _step(start: dict) -> tuple[float, float]:
    """Scan step (dy, dx) in nm as read back, for the DPC integration."""
    step = start.get("calibration", {}).get("scan_step_nm") or (1.0, 1.0)
    return float(step[0]), float(step[1])


class LiveReduction(DocumentRouter):
    """Bluesky callback: live virtual images of every run whose start document has a
    ``reduction`` spec.

    Parameters
    ----------
    sinks : iterable of callables
        Receive the derived run's documents (``(name, doc)``): the journal and the
        catalogue writer in a session.
    spec : ReductionSpec, optional
        Use this spec instead of the start document's (``bluestem reduce`` overrides).
    executor : callable, optional
        ``executor(spec, scan_shape) -> ReductionExecutor``, called at each run's start
        (and again for a re-reduction of only the announced frames); default a
        :class:`~bluestem.reduce.executors.LocalExecutor` with ``verify`` and ``threads``.
    verify : bool
        Verify chunk checksums as frames are read.
    threads : int
        Threads reading and reducing (default 1 live: the detector's frame path needs the
        other cores; ``bluestem reduce`` uses all of them).
    mode : str
        Recorded in the derived run (``live``, ``offline``, ``distributed``).
    timeout : float
        Longest the stop document waits for the worker to finish (s).

    Attributes
    ----------
    lags : list of float
        Seconds from each ``stream_datum`` arriving to its frames being in the images
        (the current or last run).
    reduced : list of (str, float)
        Each ``stream_datum`` uid with the wall-clock time (``time.time()``) its frames
        were in the images (to measure lag across processes).
    derived_uid : str or None
        The last derived run's uid.
    result : dict or None
        The last run's final images (name -> array) and ``dpc``.
    """

    def __init__(
        self,
        sinks: Iterable[Callable[[str, dict], Any]] = (),
        *,
        spec=None,
        executor: Callable[[Any, tuple[int, int]], ReductionExecutor] | None = None,
        verify: bool = True,
        threads: int = 1,
        mode: str = "live",
        timeout: float = 600.0,
        clock: Callable[[], float] = time.perf_counter,
    ):
        super().__init__()
        self.sinks = list(sinks)
        self.spec_override = spec
        self.executor_factory = executor or (
            lambda spec, shape: LocalExecutor.for_spec(spec, shape, verify=verify, threads=threads)
        )
        self.mode = mode
        self.timeout = float(timeout)
        self.clock = clock
        self.derived_uid: str | None = None
        self.result: dict | None = None
        self._run: RunState | None = None
        self._record = WorkerRecord()  # the current or last run's worker record
        self._thread: threading.Thread | None = None
        self._last: dict | None = None  # the finished run, for snapshot()
        self._warmed: set[np.dtype] = set()

    @property
    def lags(self) -> list[float]:
        """Seconds from each datum's arrival to its frames being in the images."""
        return self._record.lags

    @property
    def reduced(self) -> list[tuple[str, float]]:
        """``(datum uid, time.time())`` of each datum once its frames were reduced."""
        return self._record.reduced

    # -- before any run ----------------------------------------------------------------
    def warm_up(self, dtypes: Iterable = (np.uint16,)) -> float:
        """Compile the reduction and checksum kernels for frames of ``dtypes`` now.

        numba compiles a kernel at its first call for each frame dtype (about 4 s each
        here; ``cache=True`` makes later processes load it from disk in a fraction of
        that). Compiled during the first scan, that time is lag on the first rows: the
        session warms the detectors' dtypes before any run, and a run whose frame dtype
        is new is warmed at its descriptor, before the detector is armed.

        Returns the seconds spent.
        """
        t0 = time.perf_counter()
        for dtype in dtypes:
            self._warm(np.dtype(dtype))
        return time.perf_counter() - t0

    def _warm(self, dtype: np.dtype) -> None:
        from bluestem.reduce.warm import compile_kernels  # numba: when used, not at import

        if dtype in self._warmed:
            return
        logger.info("compiling the reduction kernels for %s frames", dtype)
        if compile_kernels(dtype):
            self._warmed.add(dtype)

    # -- documents (RunEngine thread) -------------------------------------------------
    def start(self, doc):
        self._run = None
        spec = self._spec(doc)
        if spec is None:
            return
        shape = tuple(int(v) for v in doc.get("scan", {}).get("shape", ()))
        if len(shape) != 2:
            logger.warning(
                "run %s: no 2-D scan shape in the start document; not reduced", doc["uid"]
            )
            return
        run = RunState(start=doc, spec=spec, shape=shape,
                        executor=self.executor_factory(spec, shape))  # fmt: skip
        run.executor.on_progress = run.worker.progress
        self._record, self._run = run.worker, run
        self._thread = threading.Thread(
            target=self._work, args=(run,), name="bluestem-live-reduction", daemon=True
        )
        self._thread.start()

    def _spec(self, doc):
        if self.spec_override is not None:
            return self.spec_override
        raw = doc.get("reduction")
        if not raw:
            return None
        from bluestem.reduce.spec import ReductionSpec

        try:
            return ReductionSpec.from_dict(raw)
        except (ValueError, TypeError, KeyError) as exc:
            logger.error(
                "run %s: its reduction spec is refused (%s); not reduced", doc["uid"], exc
            )
            return None

    def descriptor(self, doc):
        run = self._run
        if run is None:
            return
        for key, info in doc["data_keys"].items():
            shape = info.get("shape") or []
            if info.get("external") == "STREAM:" and len(shape) >= 2:
                run.per_event[doc["uid"], key] = int(np.prod(shape[:-2], dtype=int))
                if info.get("dtype_numpy"):
                    # Before the detector is armed: compiling later would be lag.
                    self._warm_quietly(info["dtype_numpy"])

    def _warm_quietly(self, dtype_str: str) -> None:
        try:
            self._warm(np.dtype(dtype_str))
        except Exception as exc:  # the reducer reports a real problem when it meets it
            logger.warning("could not compile the kernels for %r: %s", dtype_str, exc)

    def stream_resource(self, doc):
        run = self._run
        if run is None:
            return
        run.resources[doc["uid"]] = doc
        per_event = [n for (_, key), n in run.per_event.items() if key == doc.get("data_key")]
        if per_event and per_event[0] > 1:
            # A fly raster's file (one event per scan row): the thread may follow it from
            # its first frame, before the first row is announced.
            run.inbox.put(Watch(Block(_path(doc["uri"]), doc["parameters"]["dataset"],
                                       first=0, count=0, position=0)))  # fmt: skip

    def stream_datum(self, doc):
        run = self._run
        if run is None or doc["stream_resource"] not in run.resources:
            return
        res = run.resources[doc["stream_resource"]]
        per_event = run.per_event.get((doc["descriptor"], res.get("data_key")), 1)
        start, stop = doc["indices"]["start"], doc["indices"]["stop"]
        block = Block(
            path=_path(res["uri"]),
            dataset=res["parameters"]["dataset"],
            first=start * per_event,
            count=(stop - start) * per_event,
            position=(doc["seq_nums"]["start"] - 1) * per_event,
            received_at=self.clock(),
            datum=doc["uid"],
        )
        run.announced.append(block)
        run.inbox.put(Reduce(block))

    def stop(self, doc):
        run, self._run = self._run, None
        if run is None:
            return
        run.inbox.put(DONE)
        self._thread.join(self.timeout)
        uid = run.start["uid"]
        if self._thread.is_alive():
            logger.error("run %s: the reduction did not finish within %.0f s; no derived run",
                         uid, self.timeout)  # fmt: skip
            return
        executor = run.executor
        if not run.announced:  # e.g. its configuration failed: nothing to reduce
            executor.close()
            logger.info("run %s announced no frames: no derived run", uid)
            return
        try:
            if run.worker.error is not None:
                raise run.worker.error
            executor.reduce_late()
            reducer = self._announced_only(run, executor.result())
            images, dpc = final_images(reducer, run.spec, step=_step(run.start))
        except Exception:
            logger.exception("run %s: the reduction failed; no derived run", uid)
            return
        finally:
            executor.close()
        if dpc.get("skipped"):
            logger.warning("run %s: no DPC images (%s)", uid, dpc["skipped"])
        if dpc.get("problems"):
            logger.warning(
                "run %s: the DPC rotation estimate (%.1f deg) is poorly determined: %s; "
                "give reductions={'rotation': ..., 'flip': ...} from a calibration",
                uid, dpc["rotation_deg"], "; ".join(dpc["problems"]),
            )  # fmt: skip
        self.result = {"images": images, "dpc": dpc}
        self._last = self._view(run, images)
        frames = {"reduced": reducer.count, "announced": frames_in(run.announced)}
        docs = derived_run_documents(
            run.start, run.spec, images, dpc=dpc, mode=self.mode,
            metadata={"frames": frames}, parent_stop=doc,
        )  # fmt: skip
        self.derived_uid = docs[0][1]["uid"]
        for name, document in docs:
            for sink in self.sinks:
                sink(name, document)

    def _announced_only(self, run: RunState, reducer):
        """The reducer, holding only frames of positions the raw run announced.

        An executor that reads ahead in the file (``reads_ahead``: ``follow``) reduces
        frames before their announcement; a run cut off without announcing them (a halt,
        a lost IOC) must not have them in its derived run. Then the announced blocks are
        reduced again, alone, by a new executor (rare)."""
        if not run.executor.reads_ahead:
            return reducer
        announced = covered(run.announced, reducer.filled.size)
        extra = reducer.filled.ravel() & ~announced
        if not extra.any():
            return reducer
        logger.warning(
            "run %s: %d frames reduced ahead were never announced by the run; reducing "
            "its %d announced frames again without them", run.start["uid"],
            int(extra.sum()), int(announced.sum()),
        )  # fmt: skip
        again = self.executor_factory(run.spec, run.shape)
        try:
            for block in run.announced:
                again.reduce(block)
            again.reduce_late()
            return again.result()
        finally:
            again.close()

    # -- the worker thread -------------------------------------------------------------
    def _work(self, run: RunState) -> None:
        record = run.worker
        while True:
            try:
                message = run.inbox.get(timeout=FOLLOW_INTERVAL)
            except queue.Empty:
                # Nothing announced: read on in the file while the writer fills it, so an
                # announcement finds most of its frames already reduced.
                self._follow(run)
                continue
            if message is DONE:
                return
            if record.error is not None:
                continue  # drain: the stop document reports the first error
            try:
                message.handle(run, self.clock)
            except Exception as exc:
                record.error = exc
                logger.error("run %s: %s %s failed: %s", run.start["uid"], message.verb,
                             message.block, exc)  # fmt: skip

    @staticmethod
    def _follow(run: RunState) -> None:
        """Let the executor read ahead until it has nothing new or a message waits."""
        if run.worker.error is not None:
            return
        try:
            while run.executor.follow() and run.inbox.empty():
                pass
        except Exception as exc:
            run.worker.error = exc
            logger.error("run %s: reading ahead failed: %s", run.start["uid"], exc)

    # -- for live images (any thread) --------------------------------------------------
    def snapshot(self) -> dict:
        """What has been reduced so far: images, latest frame, masks, progress.

        The mapping :class:`bluestem.callbacks.live_images.LiveImages` draws; the DPC
        image is computed from the centre of mass so far (rotation from the spec, or
        estimated). An executor that cannot show partial images gives none until the
        run's end.
        """
        run = self._run
        if run is None:
            if self._last is not None:
                return dict(self._last)
            return {"images": {}, "latest": None, "masks": {}, "uid": None, "frames": 0,
                    "total": 0}  # fmt: skip
        images, _ = add_dpc(run.executor.live_images(), run.spec, step=_step(run.start),
                            min_neighbourhoods=LIVE_DPC_NEIGHBOURHOODS)  # fmt: skip
        return self._view(run, images)

    @staticmethod
    def _view(run: RunState, images: dict) -> dict:
        ny, nx = run.shape
        return {
            "images": images,
            "latest": run.worker.latest,
            "masks": run.spec.masks(),
            "uid": run.start["uid"],
            "frames": run.worker.frames,
            "total": ny * nx,
        }
