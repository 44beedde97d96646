"""What a frame file records about the acquisition that wrote it.

Everything is read back from the instrument at capture time (not what was requested),
plus the twin's exact parameters (JSON) so that a reader can rebuild the twin.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["calibration", "file_metadata"]


def calibration(params: dict) -> dict:
    """The writer's calibration: scan step (dy, dx) in m, angle per binned pixel in rad."""
    det = params["detector"]
    return {
        "scan_step": tuple(params["scan"]["step"]),
        "angle_per_pixel": det["binning"] * det["pixel_size"] / det["camera_length"],
    }


def file_metadata(ioc: Any, params: dict, scan_shape: tuple) -> dict:
    """Nested metadata for :class:`bluestem.frames.FrameWriter` (groups of attributes).

    Parameters
    ----------
    ioc : bluestem.ioc.instrument.Instrument
        The instrument, read back now.
    params : dict
        The twin's parameters (:func:`bluestem.ioc.backend.twin_parameters`).
    scan_shape : tuple
        The file's scan shape ((ny, nx) for a scan, (n,) for a series).
    """
    from bluestem import __version__

    internal = ioc.cam.trigger_mode_rbv.value == "Internal"
    cal = calibration(params)
    return {
        "scan": {
            **params["scan"],
            "dwell": ioc.scan.dwell_rbv.value,
            "mode": ioc.scan.mode_rbv.value,
            "file_scan_shape": list(scan_shape),
            "beam_position": list(ioc.scan.beam_position()) if internal else [],
        },
        "detector": {**ioc.cam.state(), "camera_length": params["detector"]["camera_length"]},
        "microscope": ioc.mic.state(),
        "calibration": {
            "scan_step": list(cal["scan_step"]),
            "angle_per_pixel": cal["angle_per_pixel"],
            "frame_shape": list(ioc.cam.frame_shape()),
        },
        "simulation": {
            "specimen": params["specimen"],
            "seed": params["seed"],
            "dose_per_frame": params["dose_per_frame"],
            "faults": params["faults"],
            "max_rate": int(ioc.config.max_rate),
            "twin_parameters": json.dumps(params, sort_keys=True),
        },
        "bluestem_version": __version__,
    }
