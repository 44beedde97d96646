"""The microscope (and any other device) read before and after every run."""

from __future__ import annotations

from bluestem.session.baseline import Baseline

__all__ = ["baseline"]


def baseline(*devices) -> Baseline:
    """A preprocessor that adds a ``baseline`` stream (one event before the plan's
    events, one after) reading ``devices``: ``RE.preprocessors.append(baseline(mic))``.

    A closing read that fails (the IOC died with the run) is reported and skipped, so
    the run's reason stays the error that ended it.
    """
    if not devices:
        raise ValueError("baseline(): allowed one or more devices, got none")
    return Baseline(list(devices))
