"""Session inventories for the system tests: the real devices against a test IOC."""

from __future__ import annotations

from pathlib import Path

from ioc_client import control_layer

DEVICES = (("Microscope", "MIC:", "mic"), ("ScanGenerator", "SCAN:", "scan"),
           ("PixelatedDetector", "DET:", "det"))  # fmt: skip


def inventory(ioc, data: Path, journal: Path, *, server=None, **extra) -> dict:
    """An inventory for ``ioc`` (an IocProcess) writing raw files to ``data``; the
    catalogue ``server`` (a CatalogServer) when given. ``extra`` keys replace defaults."""
    inv = {
        "devices": [
            {"class": f"bluestem.devices.{cls}", "prefix": ioc.prefix + suffix, "name": name}
            for cls, suffix, name in DEVICES
        ],
        "data_root": str(data),
        "journal_dir": str(journal),
        "metadata": {"sample": "SrTiO3", "operator": "ada"},
        "baseline": ["mic"],
        "connect_timeout": 30,
        "progress": False,
        "live": {"images": False},
        "control_layer": control_layer(),
    }
    if server is not None:
        inv["catalog"] = {"uri": server.uri, "api_key": server.api_key}
    inv.update(extra)
    return inv


def set_frame(ca, frame: int) -> None:
    """Square unbinned frames of ``frame`` pixels."""
    for pv, value in (("DET:cam1:BinX", 1), ("DET:cam1:SizeX", frame),
                      ("DET:cam1:SizeY", frame)):  # fmt: skip
        ca.put(pv, value)
