"""RunSummary: one or two lines after each run saying what was recorded and how to read it.

It also warns, when a run starts, if its scan step cannot show the specimen's lattice
(:func:`bluestem.reduce.sampling.sampling_problems`), and at its end if the DPC rotation
was poorly determined.

A scientist who has just typed ``RE(raster(...))`` wants the run's uid, its file, its
derived run and the line that reads them back, as the demo prints. Subscribe the summary
to the RunEngine after the live reduction, and give it to the live reduction as a sink
too: the derived run's documents then reach it before the raw run's stop document.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

__all__ = ["RASTERS", "RunSummary"]

#: Plans whose frames form a scan image (the lattice sampling check applies).
RASTERS = ("raster", "step_raster")


def _path(uri: str) -> str:
    return uri.split("file://localhost", 1)[-1] if uri.startswith("file://") else uri


def _dir(files: list[str]) -> str:
    return os.path.dirname(files[0])


class RunSummary:
    """Bluesky callback printing, at each raw run's stop, what it recorded.

    Parameters
    ----------
    catalog_uri : str, optional
        The catalogue's URI (the read-back line uses it); None when runs go to the
        journal only.
    journal_dir : str, optional
        Named in the read-back line when there is no catalogue.
    stream : file, optional
        Where to print (default ``sys.stdout``).

    Attributes
    ----------
    lines : list of str
        Every line printed.
    """

    def __init__(
        self,
        *,
        catalog_uri: str | None = None,
        journal_dir: str | None = None,
        stream: TextIO | None = None,
    ):
        self.catalog_uri, self.journal_dir = catalog_uri, journal_dir
        self.stream = stream
        self.lines: list[str] = []
        self._runs: dict[str, dict[str, Any]] = {}
        self._derived: dict[str, dict[str, Any]] = {}  # parent uid -> derived start
        self._sampling: dict[str, list[str]] = {}  # run uid -> undersampling warnings

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            if doc.get("parent_uid"):
                self._derived[doc["parent_uid"]] = doc
            else:
                self._runs[doc["uid"]] = {"start": doc, "files": []}
                self._check_sampling(doc)
        elif name == "stream_resource" and doc.get("run_start") in self._runs:
            self._runs[doc["run_start"]]["files"].append(_path(doc["uri"]))
        elif name == "stop" and doc.get("run_start") in self._runs:
            self._report(self._runs.pop(doc["run_start"]), doc)

    def _check_sampling(self, start: dict) -> None:
        """Say at once (and again at the end) when the step cannot show the lattice."""
        from bluestem.reduce.sampling import sampling_problems

        if start.get("plan_name") not in RASTERS:
            return  # a series of single frames has a scan geometry but no raster
        problems = sampling_problems(start)
        if problems:
            self._sampling[start["uid"]] = problems
            for problem in problems:
                self._print(f"warning: run {start['uid'][:8]}: {problem}")

    def _report(self, run: dict, stop: dict) -> None:
        start = run["start"]
        uid = start["uid"]
        status = stop.get("exit_status", "?")
        why = f" ({stop['reason']})" if stop.get("reason") and status != "success" else ""
        files = sorted(set(run["files"]))
        what = f"{start.get('plan_name', 'run')} {uid} {status}{why}"
        if files:
            where = files[0] if len(files) == 1 else f"{len(files)} files in {_dir(files)}"
            events = stop.get("num_events", {}).get("primary", 0)
            what += f": {events} event(s) of frames in {where}"
        derived = self._derived.pop(uid, None)
        if derived is not None:
            images = ", ".join(derived.get("images", []))
            what += f"; derived run {derived['uid']} ({images})"
        self._print(what)
        for problem in (derived or {}).get("dpc", {}).get("problems", []):
            self._print(f"  warning: DPC rotation {derived['dpc']['rotation_deg']:.1f} deg is "
                        f"poorly determined: {problem}")  # fmt: skip
        for problem in self._sampling.pop(uid, []):
            self._print(f"  warning: {problem}")
        if self.catalog_uri:
            read = f'c = from_uri({self.catalog_uri!r}, api_key=KEY); c["{uid}"]'
            if files and start.get("detectors"):
                read += f'["primary"]["{start["detectors"][0]}_image"]'
            if derived is not None:
                read += f'; c["{derived["uid"]}"]["primary"]["bf"][0]'
            umbrella = (start.get("closed_loop") or {}).get("role") == "umbrella"
            again = (f"bluestem loop show {uid[:8]} replays its iterations" if umbrella
                     else f"bluestem reduce {uid[:8]} re-reduces it")  # fmt: skip
            self._print(f"  read it: {read}   (catalog[...] in the shell; {again})")
        elif self.journal_dir:
            self._print(f"  journal only: {self.journal_dir} (bluestem sync uploads it)")

    def _print(self, line: str) -> None:
        self.lines.append(line)
        print(line, file=self.stream or sys.stdout, flush=True)
