"""``build_session``: the one call an IPython profile (or the demo) makes."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import SessionConfig, load_config

__all__ = ["Session", "build_session"]

logger = logging.getLogger(__name__)


@dataclass
class Session:
    """A ready RunEngine with its devices and callbacks.

    Devices are in ``devices`` (name -> device) and also attributes (``session.mic``).

    Attributes
    ----------
    RE : bluesky.RunEngine
    devices : dict
    catalog : tiled client or None
        The catalogue root, when one is configured and answered at start.
    callbacks : dict
        Name (``journal``, ``writer``, ``progress``) -> RunEngine subscription token.
    journal : DocumentJournal or None
    writer : ResilientTiledWriter or None
    progress : ProgressBar or None
    live : LiveReduction or None
        Reduces every run whose start document has a reduction spec; its derived runs
        go to the journal and the catalogue.
    images : LiveImages or None
    loop_view : LoopView or None
        Closed loops' progress lines (with ``progress:``) and figures of their estimate
        (when live images are on: ``live.images``; PNGs in ``live.out_dir``).
    summary : RunSummary or None
        Prints, after each run, its uid, file, derived run and how to read them.
    notifier : Notifier or None
        Tells operators (log file, e-mail, webhook: ``notify:``) of failed runs and
        dropped frames; ``notifier.notify(event)`` for anything else.
    suspenders : list
        The suspenders of ``suspenders:`` installed on ``RE``
        (:mod:`bluestem.session.suspenders`).
    config : SessionConfig
    """

    RE: Any
    devices: dict
    catalog: Any = None
    callbacks: dict = field(default_factory=dict)
    journal: Any = None
    writer: Any = None
    progress: Any = None
    live: Any = None
    images: Any = None
    loop_view: Any = None
    summary: Any = None
    notifier: Any = None
    suspenders: list = field(default_factory=list)
    config: SessionConfig | None = None

    def __getattr__(self, name: str) -> Any:
        devices = self.__dict__.get("devices") or {}
        if name in devices:
            return devices[name]
        raise AttributeError(f"Session has no attribute or device {name!r}")

    def namespace(self) -> dict:
        """Names for an interactive namespace: the ``__all__`` of every module of the
        inventory's ``namespace`` (e.g. ``bluestem.plans``), ``RE``, ``session``,
        ``catalog`` and every device by its name."""
        import importlib

        plans = {}
        for module_name in self.config.namespace if self.config else ():
            module = importlib.import_module(module_name)
            names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
            plans.update({name: getattr(module, name) for name in names})
        return {**plans, "RE": self.RE, "session": self, "catalog": self.catalog,
                **self.devices}  # fmt: skip

    def close(self, timeout: float | None = None) -> str:
        """Unsubscribe, wait for the catalogue writer (at most ``timeout`` s, default the
        inventory's ``catalog.exit_timeout``), close the journal (idempotent).

        Runs the catalogue did not get in time are marked in the journal (``.unsynced``,
        with the reason) and named in the returned text, which says how to upload them
        (``bluestem sync``); the text is empty when there is nothing to say.
        """
        if self.__dict__.get("_closed"):
            return ""
        self.__dict__["_closed"] = True
        for token in self.callbacks.values():
            self.RE.unsubscribe(token)
        self.callbacks.clear()
        for suspender in self.suspenders:
            self.RE.remove_suspender(suspender)
        text = ""
        if self.writer is not None:
            cat = (self.config.catalog if self.config else None) or {}
            wait = cat.get("exit_timeout", 30.0) if timeout is None else timeout
            if not self.writer.close(wait):
                self.writer.give_up_pending(
                    "the session ended before the catalogue had it "
                    f"(waited {wait:g} s for {cat.get('uri', 'the catalogue')})"
                )
            # Every run given up on, now or during the session, with its reason.
            text = _upload_advice(self.writer.failures, self.journal, cat)
        if self.journal is not None:
            self.journal.close()
        if self.notifier is not None:
            self.notifier.close()
        return text

    def close_at_exit(self) -> None:
        """:meth:`close`, printing what it has to say (for ``atexit`` and the shell)."""
        import sys

        text = self.close()
        if text:
            print(text, file=sys.stderr, flush=True)


def _upload_advice(failures: dict, journal, catalog: dict) -> str:
    """What a user must know about runs missing from the catalogue at the end
    (``failures``: uid -> why)."""
    if not failures:
        return ""
    lines = [f"bluestem: {len(failures)} run(s) are NOT in the catalogue "
             f"{catalog.get('uri', '')}:"]  # fmt: skip
    lines += [f"  {uid}: {why}" for uid, why in failures.items()]
    if journal is not None:
        lines.append(
            f"  they are in the journal {journal.directory}; upload them with:\n"
            f"  bluestem sync --journal {journal.directory} --catalog {catalog.get('uri', 'URI')}"
        )
    return "\n".join(lines)


def _set_ca_env(ca: Mapping[str, str]) -> None:
    # caproto reads EPICS_CA_* once, when its first client context is made: set them first.
    os.environ.update(ca)


def _connect(devices: dict, timeout: float) -> None:
    for name, device in devices.items():
        try:
            device.wait_for_connection(timeout=timeout)
        except TimeoutError:
            missing = [
                getattr(walk.item, "pvname", None) or walk.item.name
                for walk in device.walk_signals(include_lazy=False)
                if not walk.item.connected
            ]
            pvs = ", ".join(str(p) for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise ConnectionError(
                f"device {name!r} ({type(device).__name__}, prefix {device.prefix!r}): "
                f"{len(missing)} PV(s) did not connect within {timeout} s: {pvs}. "
                "Is the IOC running and EPICS_CA_ADDR_LIST / the config's ca: right?"
            ) from None


# Longest a session's start waits for the catalogue: tiled's client retries a refused
# connection for 45 s and waits 30 s for an answer, which must not hold up the session.
CATALOG_START_TIMEOUT = 5.0


def _catalog_client(catalog: dict, timeout: float = CATALOG_START_TIMEOUT):
    """The catalogue client if the catalogue answers within ``timeout`` s, else None."""
    import threading

    from tiled.client import from_uri

    found: dict = {}

    def connect():
        try:
            found["client"] = from_uri(catalog["uri"], api_key=catalog.get("api_key"))
        except Exception as exc:
            found["error"] = exc

    thread = threading.Thread(target=connect, name="bluestem-catalog-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if "client" in found:
        return found["client"]
    why = found.get("error") or f"no answer within {timeout:g} s"
    # The runs go on; the writer tries again at each run.
    logger.warning("catalogue %s not reachable now (%s); runs go to the journal and are "
                   "written when it answers", catalog["uri"], why)  # fmt: skip
    return None


def _share_liveness(devices: dict) -> None:
    """One record of the CA servers that stopped answering for every device that keeps
    one (bluestem's devices: ``liveness``), so that one device's timeout spares the
    others the wait when they live in the same IOC (see bluestem.devices.liveness)."""
    keeping = [d for d in devices.values() if hasattr(getattr(d, "liveness", None), "lost")]
    if keeping:
        # A fresh record of the devices' own kind: the core does not import devices/.
        shared = type(keeping[0].liveness)()
        for device in keeping:
            device.liveness = shared


def build_session(config: Mapping | str | os.PathLike, *, connect: bool = True) -> Session:
    """Build a RunEngine session from an inventory (mapping or YAML path).

    Sets the CA environment (``ca:``) and ``ophyd.set_cl(control_layer)`` (``caproto``
    by default, or ``pyepics``: libca), creates the
    devices and connects them (``ConnectionError`` naming the PVs that did not connect),
    creates the RunEngine with ``metadata`` in ``RE.md``, a baseline stream of the
    ``baseline:`` devices (default: every device that is not a flyer, i.e. has no
    ``kickoff``), and subscribes, in this order, the
    document journal, the resilient catalogue writer, the progress bar, the live
    reduction (its kernels compiled first, for the detectors' frame types) and the live
    images (``live:``), the closed loops' view and the run summary. The RunEngine is
    :class:`bluestem.session.engine.RunEngine` (a reason on every run that is not a
    success) and the baseline is :class:`bluestem.session.baseline.Baseline`.

    Parameters
    ----------
    config : mapping or path
        See ``docs/session.md``.
    connect : bool
        Wait for every device to connect (``connect_timeout``, default 10 s).

    Raises
    ------
    ValueError
        A bad inventory entry (names the key, the value and what is allowed).
    ConnectionError
        A device did not connect.
    """
    cfg = config if isinstance(config, SessionConfig) else load_config(config)
    _set_ca_env(cfg.ca)

    import ophyd

    from bluestem.callbacks import ProgressBar, ResilientTiledWriter
    from bluestem.journal import DocumentJournal
    from bluestem.session.baseline import Baseline
    from bluestem.session.engine import RunEngine

    ophyd.set_cl(cfg.control_layer)
    devices = {s.name: s.cls(s.prefix, name=s.name, **s.kwargs) for s in cfg.devices}
    _share_liveness(devices)
    if connect:
        _connect(devices, cfg.connect_timeout)

    RE = RunEngine({})
    RE.record_interruptions = True  # pauses and resumes on record: stream "interruptions"
    RE.md.update(cfg.metadata)
    base = ([devices[n] for n in cfg.baseline] if cfg.baseline is not None
            else [d for d in devices.values() if not hasattr(d, "kickoff")])  # fmt: skip
    if base:
        RE.preprocessors.append(Baseline(base))

    session = Session(RE=RE, devices=devices, config=cfg)
    journal_dir = cfg.journal_dir or (cfg.data_root / "journal" if cfg.data_root else None)
    if journal_dir is not None:
        session.journal = DocumentJournal(journal_dir)
        session.callbacks["journal"] = RE.subscribe(session.journal)
        RE.attempts = session.journal  # every RE(...) call, also one that opens no run
    if cfg.catalog is not None:
        cat = cfg.catalog
        session.catalog = _catalog_client(cat)
        factory = session.catalog or (
            lambda: __import__("tiled.client", fromlist=["from_uri"]).from_uri(
                cat["uri"], api_key=cat.get("api_key")
            )
        )
        session.writer = ResilientTiledWriter(
            factory, journal=session.journal, batch_size=int(cat.get("batch_size", 100))
        )
        session.callbacks["writer"] = RE.subscribe(session.writer)
    if cfg.notify is not None:
        from bluestem.notify import Notifier

        session.notifier = Notifier.from_config(cfg.notify)
        session.callbacks["notify"] = RE.subscribe(session.notifier)
        if session.writer is not None:
            session.writer.on_give_up = session.notifier.catalog_gave_up
    if cfg.suspenders:
        from bluestem.session.suspenders import make_suspenders

        session.suspenders = make_suspenders(cfg.suspenders, devices)
        for suspender in session.suspenders:
            RE.install_suspender(suspender)
    if cfg.progress:
        session.progress = ProgressBar()  # dropped frames from the monitor stream's events
        session.callbacks["progress"] = RE.subscribe(session.progress)
    _subscribe_live(session, cfg.live)
    _subscribe_loop_view(session, cfg)
    _subscribe_summary(session, cfg)
    return session


def _subscribe_summary(session: Session, cfg: SessionConfig) -> None:
    """The after-run summary, last: it also receives the derived runs (a live sink)."""
    from bluestem.callbacks.summary import RunSummary

    cat = cfg.catalog or {}
    journal = session.journal.directory if session.journal is not None else None
    session.summary = RunSummary(catalog_uri=cat.get("uri"), journal_dir=journal)
    session.callbacks["summary"] = session.RE.subscribe(session.summary)
    if session.live is not None:
        session.live.sinks.append(session.summary)


def _frame_dtypes(devices: dict) -> list:
    """The frame dtype of every connected detector (``cam.dtype()``), else uint16."""
    import numpy as np

    found = []
    for device in devices.values():
        try:
            if getattr(device, "connected", False) and hasattr(device, "cam"):
                found.append(np.dtype(device.cam.dtype()))
        except Exception:  # not a detector of ours, or no answer: nothing to warm
            continue
    return found or [np.dtype(np.uint16)]


def _subscribe_live(session: Session, live: Mapping[str, Any]) -> None:
    """Live reduction (after the journal and the writer, which also receive its derived
    runs) and, when wanted, live images drawn from it."""
    if not live["reduce"]:
        return
    from bluestem.callbacks import LiveImages, LiveReduction

    sinks = [s for s in (session.journal, session.writer) if s is not None]
    session.live = LiveReduction(sinks, verify=live["verify"])
    # Compile the kernels for the detectors' frame types now, not during the first scan.
    session.live.warm_up(_frame_dtypes(session.devices))
    session.callbacks["live"] = session.RE.subscribe(session.live)
    out_dir = live["out_dir"]
    if _images_wanted(live):
        headless = out_dir is not None
        session.images = LiveImages(session.live, headless=headless, out_dir=out_dir)
        session.callbacks["images"] = session.RE.subscribe(session.images)


def _interactive() -> bool:
    import matplotlib

    return matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps")


def _images_wanted(live: Mapping[str, Any]) -> bool:
    """``live.images``, with ``auto`` resolved: a GUI backend or an ``out_dir``."""
    images = live["images"]
    if images == "auto":
        images = _interactive() or live["out_dir"] is not None
    return bool(images)


def _subscribe_loop_view(session: Session, cfg: SessionConfig) -> None:
    """The closed loops' view: its lines follow ``progress:``, its figures the live
    images (``live.images``, PNGs in ``live.out_dir``); every other run passes by."""
    out_dir = cfg.live["out_dir"]
    # A figure needs somewhere to go: a window, or PNGs in out_dir.
    figures = _images_wanted(cfg.live) and (out_dir is not None or _interactive())
    if not (cfg.progress or figures):
        return
    from bluestem.callbacks import LoopView

    session.loop_view = LoopView(progress=cfg.progress, figures=figures, out_dir=out_dir,
                                 headless=out_dir is not None)  # fmt: skip
    session.callbacks["loop"] = session.RE.subscribe(session.loop_view)
