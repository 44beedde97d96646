"""The HDF5 layout of a raw-frame file: EMD 1.0 tree, dims, metadata and the received map.

Everything here runs before the file switches to SWMR mode, because an HDF5 file in
SWMR mode cannot gain new objects or attributes. The exact tree is documented in
docs/data-layout.md.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = [
    "EMD_ARRAY",
    "EMD_ROOT",
    "FRAMES_PATH",
    "RECEIVED_PATH",
    "REQUIRED_FILE_ATTRS",
    "ReservedText",
    "create_file",
    "create_layout",
    "reserved_text",
    "to_attr",
    "write_mapping",
]

EMD_ROOT = "bluestem"
EMD_ARRAY = "frames"
FRAMES_PATH = f"/{EMD_ROOT}/{EMD_ARRAY}/data"
RECEIVED_PATH = "/received"
REQUIRED_FILE_ATTRS = (
    "emd_group_type",
    "version_major",
    "version_minor",
    "bluestem_version",
    "created",
    "scan_shape",
    "frame_shape",
    "chunk_shape",
    "compression",
)


def create_file(path: str | os.PathLike) -> h5py.File:
    """Create a new, empty raw-frame file (HDF5 ``libver="latest"``, for SWMR).

    Raises
    ------
    FileExistsError
        The file exists (it is never overwritten).
    FileNotFoundError, PermissionError
        The directory is missing or not writable (naming it).
    """
    target = Path(path)
    directory = target.parent.resolve()
    if not directory.is_dir():
        raise FileNotFoundError(f"directory {directory} does not exist (for {target.name})")
    if target.exists():
        raise FileExistsError(f"{path} already exists; FrameWriter never overwrites")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"directory {directory} is not writable")
    try:
        return h5py.File(path, "x", libver="latest")
    except FileExistsError:
        raise
    except OSError as exc:
        # Permission bits say nothing for root or on read-only / virtual file systems:
        # the create itself is the test, and its failure must name the directory.
        raise PermissionError(f"directory {directory} is not writable ({exc})") from exc


@dataclass(frozen=True)
class ReservedText:
    """A metadata entry whose text is known only during the acquisition (a detector's
    acquisition header): a NUL-filled uint8 dataset of ``size`` bytes, created with the
    file and filled by :meth:`bluestem.frames.FrameWriter.fill_text` (SWMR allows writing
    a dataset's values, never creating an attribute, once readers may be attached)."""

    size: int


def reserved_text(dataset) -> str:
    """The text in a :class:`ReservedText` dataset (``""`` while unfilled)."""
    return np.asarray(dataset[()], np.uint8).tobytes().rstrip(b"\0").decode("utf-8", "replace")


def to_attr(value: Any) -> Any:
    """Convert ``value`` into something HDF5 stores as an attribute.

    Numbers, strings, bools and numeric arrays are stored as they are; ``None`` becomes the
    string ``"null"``; lists of strings become string arrays; anything else HDF5 cannot
    hold (mixed or nested lists, dicts) is JSON-encoded, and objects JSON cannot encode
    (paths, datetimes, enums) fall back to ``str``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return np.bool_(value)
    if isinstance(value, int | float | str | bytes | np.number):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str | bytes):
        items = list(value)
        if items and all(isinstance(v, str) for v in items):
            return np.array(items, dtype=h5py.string_dtype())
        if all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in items):
            return np.asarray(items) if items else np.zeros(0)
    if isinstance(value, Mapping | Sequence | np.ndarray):
        try:
            return json.dumps(value, default=str)
        except (TypeError, ValueError):
            pass
    return str(value)


def write_mapping(group: h5py.Group, mapping: Mapping[str, Any]) -> None:
    """Write a nested mapping: sub-mappings become sub-groups, other values attributes."""
    for key, value in mapping.items():
        # '/' would create a path instead of a name.
        name = str(key).replace("/", "_") or "_"
        if isinstance(value, Mapping):
            write_mapping(group.require_group(name), value)
        elif isinstance(value, ReservedText):
            text = group.create_dataset(name, shape=(int(value.size),), dtype=np.uint8,
                                        fillvalue=0)  # fmt: skip
            text.attrs["description"] = "text filled in during the acquisition, NUL-padded"
        else:
            group.attrs[name] = to_attr(value)


def _dim(group: h5py.Group, index: int, name: str, units: str, step: float) -> None:
    # emdfile stores a linear dim vector as its first two values; RosettaSciIO derives
    # offset and scale from them.
    dset = group.create_dataset(f"dim{index}", data=np.array([0.0, step]))
    dset.attrs["name"] = name
    dset.attrs["units"] = units


def _scan_dims(scan_shape: tuple[int, ...], calibration: Mapping[str, Any]) -> list[tuple]:
    if len(scan_shape) == 1:
        return [("frame", "index", 1.0)]
    step = calibration.get("scan_step")
    if step is None:
        return [("y", "pixels", 1.0), ("x", "pixels", 1.0)]
    dy, dx = (float(s) for s in step)
    return [("y", "m", dy), ("x", "m", dx)]


def _detector_dims(calibration: Mapping[str, Any]) -> list[tuple]:
    angle = calibration.get("angle_per_pixel")
    if angle is None or not math.isfinite(float(angle)):
        return [("ky", "pixels", 1.0), ("kx", "pixels", 1.0)]
    mrad = float(angle) * 1e3
    return [("ky", "mrad", mrad), ("kx", "mrad", mrad)]


def create_layout(
    file: h5py.File,
    *,
    scan_shape: tuple[int, ...],
    frame_shape: tuple[int, int],
    dtype: np.dtype,
    chunk_shape: tuple[int, ...],
    compression: str | None,
    metadata: Mapping[str, Any],
    calibration: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> tuple[h5py.Dataset, h5py.Dataset]:
    """Create every group, dataset and attribute; return (frames, received) datasets."""
    from bluestem import __version__

    attrs = file.attrs
    attrs["emd_group_type"] = "file"
    attrs["version_major"] = 1
    attrs["version_minor"] = 0
    attrs["version_release"] = 0
    attrs["authoring_program"] = "bluestem"
    attrs["bluestem_version"] = __version__
    attrs["created"] = datetime.now(UTC).isoformat()
    attrs["scan_shape"] = np.asarray(scan_shape, dtype=np.int64)
    attrs["frame_shape"] = np.asarray(frame_shape, dtype=np.int64)
    attrs["dtype"] = np.dtype(dtype).str
    attrs["chunk_shape"] = np.asarray(chunk_shape, dtype=np.int64)
    attrs["compression"] = compression or "none"
    attrs["checksum"] = "fletcher32"
    attrs["frames_path"] = FRAMES_PATH
    attrs["received_path"] = RECEIVED_PATH

    root = file.create_group(EMD_ROOT)
    root.attrs["emd_group_type"] = "root"
    root.attrs["python_class"] = "Root"
    array = root.create_group(EMD_ARRAY)
    array.attrs["emd_group_type"] = "array"
    array.attrs["python_class"] = "Array"

    filters: dict[str, Any] = {"fletcher32": True}
    if compression == "bitshuffle-lz4":
        import hdf5plugin

        filters.update(hdf5plugin.Bitshuffle(cname="lz4"))
    frames = array.create_dataset(
        "data",
        shape=(*scan_shape, *frame_shape),
        dtype=dtype,
        chunks=chunk_shape,
        fillvalue=0,
        **filters,
    )
    frames.attrs["units"] = "counts"
    dims = _scan_dims(scan_shape, calibration) + _detector_dims(calibration)
    for index, (name, units, step) in enumerate(dims):
        _dim(array, index, name, units, step)

    received = file.create_dataset(
        RECEIVED_PATH.lstrip("/"), shape=scan_shape, dtype=np.uint8, chunks=scan_shape, fillvalue=0
    )
    received.attrs["description"] = "1 = frame written, 0 = never received (data zeros)"

    write_mapping(file.create_group("metadata"), metadata)
    write_mapping(file.create_group("calibration"), calibration)
    write_mapping(file.create_group("writer"), settings)
    return frames, received
