"""The start document's record of the instrument, read back (never as requested)."""

from __future__ import annotations

from typing import Any

from bluestem.instrument import angle_per_pixel

__all__ = ["calibration", "instrument_state", "plain"]


def plain(value: Any) -> Any:
    """A JSON-friendly copy (numpy scalars and arrays become Python numbers and lists)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _values(readings: dict, prefix: str) -> dict:
    """``{"mic_defocus": {"value": 3.0, ...}}`` -> ``{"defocus": 3.0}``."""
    cut = len(prefix) + 1 if prefix else 0
    return {key[cut:] if key.startswith(prefix) else key: plain(r["value"])
            for key, r in readings.items()}  # fmt: skip


def calibration(detector_config: dict, microscope: dict | None, scan: dict) -> dict:
    """mrad per (binned) detector pixel and nm per scan step, from readbacks.

    angle = binning × pixel size / camera length (small angles:
    :func:`bluestem.instrument.angle_per_pixel`, in rad, here in mrad). Left out when a
    readback is missing or not physical (a camera length of 0).
    """
    out: dict[str, Any] = {
        "scan_step_nm": list(scan["step"]),
        "scan_rotation_deg": scan["rotation"],
    }
    binning = detector_config.get("cam_bin_x")
    pixel = detector_config.get("pixel_size")
    if microscope and binning and pixel and microscope.get("camera_length"):
        camera_length = microscope["camera_length"] * 1e-3  # mm -> m
        try:
            out["angle_per_pixel_mrad"] = angle_per_pixel(pixel, camera_length, binning) * 1e3
        except ValueError:
            return out
        out["camera_length_mm"] = microscope["camera_length"]
    return out


def instrument_state(detector, scan, microscope=None) -> dict:
    """Read every device now: ``{"scan", "detector", "microscope", "calibration"}``.

    Called by plans after configuring and before opening the run (blocking CA reads, a few
    ms in all)."""
    geometry = scan.geometry()
    det = _values(detector.read_configuration(), detector.name)
    mic = _values(microscope.read(), microscope.name) if microscope is not None else None
    state: dict[str, Any] = {"scan": geometry, "detector": det}
    if mic is not None:
        state["microscope"] = mic
    state["calibration"] = calibration(det, mic, geometry)
    return state
