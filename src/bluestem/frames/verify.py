"""verify_file: check every chunk's checksum and the received map of a raw-frame file."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from bluestem.frames.checksum import fletcher32, split_chunk
from bluestem.frames.layout import FRAMES_PATH, RECEIVED_PATH, REQUIRED_FILE_ATTRS

__all__ = ["VerifyReport", "verify_file"]

_FLETCHER32 = 3  # H5Z_FILTER_FLETCHER32
_MAX_LISTED = 20


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_file`.

    ``ok`` is False on any corrupt chunk, an unreadable or missing file, or a missing
    required attribute/dataset. Dropped frames (0 in ``received``) alone leave ``ok``
    True; they are listed in ``dropped_indices`` (flat scan indices).
    ``corrupt_chunks`` holds one dict per bad chunk: ``offset`` (chunk's logical offset),
    ``frames`` (flat indices it holds) and ``error``.
    """

    ok: bool
    path: str
    chunks_checked: int = 0
    corrupt_chunks: list = field(default_factory=list)
    frames_expected: int = 0
    frames_received: int = 0
    dropped_indices: list = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        """Number of frames never received."""
        return len(self.dropped_indices)

    def summary(self) -> str:
        """A few human-readable lines."""
        status = "OK" if self.ok else "FAILED"
        lines = [
            f"{self.path}: {status} - {self.chunks_checked} chunks checked, "
            f"{len(self.corrupt_chunks)} corrupt, {self.frames_received}/"
            f"{self.frames_expected} frames received, {self.dropped} dropped"
        ]
        for bad in self.corrupt_chunks[:_MAX_LISTED]:
            frames = bad["frames"]
            span = f"{frames[0]}..{frames[-1]}" if frames else "?"
            lines.append(
                f"  corrupt chunk at {tuple(bad['offset'])} (frames {span}): {bad['error']}"
            )
        if self.dropped:
            shown = ", ".join(map(str, self.dropped_indices[:_MAX_LISTED]))
            more = " ..." if self.dropped > _MAX_LISTED else ""
            lines.append(f"  dropped frames: {shown}{more}")
        lines.extend(f"  {m}" for m in self.messages)
        return "\n".join(lines)

    def to_json(self) -> str:
        """The report as a JSON object."""
        return json.dumps(asdict(self) | {"dropped": self.dropped}, default=str)


def _frames_of(offset, chunks, shape) -> list[int]:
    # Flat scan indices covered by a chunk (scan axes are all but the last two).
    scan_shape = shape[:-2]
    ranges = [
        range(o, min(o + c, s))
        for o, c, s in zip(offset[:-2], chunks[:-2], scan_shape, strict=True)
    ]
    grid = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, len(scan_shape))
    return [int(i) for i in np.ravel_multi_index(tuple(grid.T), scan_shape)]


def _check_chunks(ds, report: VerifyReport) -> None:
    dcpl = ds.id.get_create_plist()
    filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
    if _FLETCHER32 not in filters:
        report.messages.append(f"{FRAMES_PATH} has no fletcher32 filter: chunks unverifiable")
        report.ok = False
        return
    direct = filters == [_FLETCHER32]
    dsid = ds.id
    for i in range(dsid.get_num_chunks()):
        info = dsid.get_chunk_info(i)
        offset = tuple(int(o) for o in info.chunk_offset)
        error = None
        try:
            if direct:
                mask, raw = dsid.read_direct_chunk(offset)
                body, stored = split_chunk(raw)
                computed = fletcher32(body)
                if mask != 0:
                    error = f"filter mask {mask:#x} (fletcher32 skipped)"
                elif computed != stored:
                    error = (
                        f"fletcher32 mismatch: stored {stored:#010x}, computed {computed:#010x}"
                    )
            else:
                # The filter pipeline verifies the checksum and raises on a mismatch.
                sel = tuple(
                    slice(o, min(o + c, s))
                    for o, c, s in zip(offset, ds.chunks, ds.shape, strict=True)
                )
                ds[sel]
        except Exception as exc:  # one bad chunk must not stop the scan of the rest
            error = f"{type(exc).__name__}: {exc}"
        report.chunks_checked += 1
        if error is not None:
            report.corrupt_chunks.append(
                {
                    "offset": offset,
                    "frames": _frames_of(offset, ds.chunks, ds.shape),
                    "error": error,
                }
            )


def verify_file(path: str | os.PathLike) -> VerifyReport:
    """Verify a raw-frame file: every chunk's fletcher32, the received map, the attrs.

    Parameters
    ----------
    path : str or os.PathLike
        File written by :class:`~bluestem.frames.FrameWriter`.

    Returns
    -------
    VerifyReport
        Never raises for a bad file; problems are in ``ok`` and ``messages``.
    """
    import h5py
    import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for compressed files)

    report = VerifyReport(ok=True, path=str(path))
    if not os.path.exists(path):
        report.ok = False
        report.messages.append("file does not exist")
        return report
    try:
        with h5py.File(path, "r") as f:
            missing = [a for a in REQUIRED_FILE_ATTRS if a not in f.attrs]
            if missing:
                report.ok = False
                report.messages.append(f"missing file attributes: {', '.join(missing)}")
            if FRAMES_PATH not in f:
                report.ok = False
                report.messages.append(f"missing frames dataset {FRAMES_PATH}")
                return report
            ds = f[FRAMES_PATH]
            if RECEIVED_PATH in f:
                received = f[RECEIVED_PATH][...]
                report.frames_expected = int(received.size)
                report.frames_received = int(np.count_nonzero(received))
                report.dropped_indices = [int(i) for i in np.flatnonzero(received == 0)]
            else:
                report.ok = False
                report.frames_expected = int(np.prod(ds.shape[:-2]))
                report.messages.append(f"missing received map {RECEIVED_PATH}")
            _check_chunks(ds, report)
    except Exception as exc:
        report.ok = False
        report.messages.append(f"unreadable: {type(exc).__name__}: {exc}")
    if report.corrupt_chunks:
        report.ok = False
    return report
