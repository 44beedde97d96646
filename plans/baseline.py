"""The microscope (and any other device) read before and after every run."""

from __future__ import annotations

from bluesky.preprocessors import SupplementalData

__all__ = ["baseline"]


def baseline(*devices) -> SupplementalData:
    """A preprocessor that adds a ``baseline`` stream (one event before the plan's
    events, one after) reading ``devices``: ``RE.preprocessors.append(baseline(mic))``.
    """
    if not devices:
        raise ValueError("baseline(): allowed one or more devices, got none")
    return SupplementalData(baseline=list(devices))
