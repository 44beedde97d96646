"""What a frame file records about the acquisition that wrote it.

Everything is read back from the instrument at capture time (not what was requested),
plus what the frame source records about itself (the twin: its exact parameters, JSON,
so that a reader can rebuild it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bluestem.instrument import angle_per_pixel

from .source import Readback

__all__ = ["calibration", "file_metadata"]


def calibration(readback: Readback) -> dict:
    """The writer's calibration: scan step (dy, dx) in m, angle per binned pixel in rad."""
    det = readback.detector
    return {
        "scan_step": tuple(readback.scan["step"]),
        "angle_per_pixel": angle_per_pixel(
            det["pixel_size"], det["camera_length"], det["binning"]
        ),
    }


def file_metadata(
    readback: Readback,
    *,
    scan_shape: tuple[int, ...],
    frame_shape: tuple[int, int],
    scan: Mapping[str, Any],
    detector: Mapping[str, Any],
    microscope: Mapping[str, Any],
    source: Mapping[str, Mapping[str, Any]],
) -> dict:
    """Nested metadata for :class:`bluestem.frames.FrameWriter` (groups of attributes).

    Parameters
    ----------
    readback : Readback
        The instrument as read back for this acquisition.
    scan_shape : tuple
        The file's scan shape ((ny, nx) for a scan, (n,) for a series).
    frame_shape : tuple
        (ky, kx) of one binned frame.
    scan, detector, microscope : mapping
        The groups' own settings (``ScanGenerator.settings``, ``Camera.state``,
        ``Microscope.state``).
    source : mapping
        The groups the frame source adds (:attr:`bluestem.ioc.source.FrameRecipe.metadata`).
    """
    from bluestem import __version__

    cal = calibration(readback)
    position = readback.beam_position
    return {
        "scan": {
            **readback.scan,
            **scan,
            "file_scan_shape": list(scan_shape),
            "beam_position": list(position) if position is not None else [],
        },
        "detector": {**detector, "camera_length": readback.detector["camera_length"]},
        "microscope": dict(microscope),
        "calibration": {
            "scan_step": list(cal["scan_step"]),
            "angle_per_pixel": cal["angle_per_pixel"],
            "frame_shape": list(frame_shape),
        },
        **{name: dict(group) for name, group in source.items()},
        "bluestem_version": __version__,
    }
