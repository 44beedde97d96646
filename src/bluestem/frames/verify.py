"""verify_file: check every chunk's checksum and the received map of a raw-frame file.

A file whose writer never closed it (killed, or still running) is opened in SWMR mode,
which HDF5 allows with the superblock's status flags set; see docs/data-layout.md,
"A file whose writer died".
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from bluestem.frames.checksum import fletcher32, split_chunk
from bluestem.frames.layout import FRAMES_PATH, RECEIVED_PATH, REQUIRED_FILE_ATTRS
from bluestem.frames.repair import open_writers, read_superblock

__all__ = ["VerifyReport", "verify_file"]

_FLETCHER32 = 3  # H5Z_FILTER_FLETCHER32
_MAX_LISTED = 20
# A SWMR reader retries a metadata read whose checksum fails, sleeping 1, 2, 4, ... ns
# in between, 100 times by default: on truncated or corrupt metadata that is 2**100 ns
# (measured: verify of a truncated unclosed file hung). 24 attempts still ride out a
# torn read of a live writer's flush (about 17 ms of sleeps in all).
_SWMR_READ_ATTEMPTS = 24


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_file`.

    ``ok`` is False on any corrupt chunk, a chunk the received map claims that is not on
    disk, an unreadable, truncated or missing file, or a missing required
    attribute/dataset. Dropped frames (0 in ``received``) alone leave ``ok`` True; they
    are listed in ``dropped_indices`` (flat scan indices), and ``received_ranges`` lists
    the frames held as ``[first, last]`` runs. ``corrupt_chunks`` holds one dict per bad
    chunk: ``offset`` (chunk's logical offset), ``frames`` (flat indices it holds, or
    for a missing chunk those the map claims) and ``error``. ``frames_unverified``
    counts claimed frames in those chunks. ``closed`` is False when the writer never
    closed the file (killed, or still running: then ``writers`` may name it).
    """

    ok: bool
    path: str
    chunks_checked: int = 0
    corrupt_chunks: list = field(default_factory=list)
    frames_expected: int = 0
    frames_received: int = 0
    dropped_indices: list = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    closed: bool = True
    writers: list[str] = field(default_factory=list)
    received_ranges: list = field(default_factory=list)
    frames_unverified: int = 0

    @property
    def dropped(self) -> int:
        """Number of frames never received (of an unclosed file: not written yet)."""
        return len(self.dropped_indices)

    def summary(self) -> str:
        """A few human-readable lines."""
        status = "OK" if self.ok else "FAILED"
        tail = f"{self.dropped} dropped" if self.closed else "file not closed by its writer"
        lines = [
            f"{self.path}: {status} - {self.chunks_checked} chunks checked, "
            f"{len(self.corrupt_chunks)} corrupt, {self.frames_received}/"
            f"{self.frames_expected} frames received, {tail}"
        ]
        for bad in self.corrupt_chunks[:_MAX_LISTED]:
            frames = bad["frames"]
            span = f"{frames[0]}..{frames[-1]}" if frames else "?"
            lines.append(
                f"  corrupt chunk at {tuple(bad['offset'])} (frames {span}): {bad['error']}"
            )
        if self.dropped and self.closed:
            shown = ", ".join(map(str, self.dropped_indices[:_MAX_LISTED]))
            more = " ..." if self.dropped > _MAX_LISTED else ""
            lines.append(f"  dropped frames: {shown}{more}")
        if not self.closed:
            runs = [f"{a}..{b}" if b > a else f"{a}" for a, b in self.received_ranges]
            more = " ..." if len(runs) > _MAX_LISTED else ""
            lines.append(f"  frames held: {', '.join(runs[:_MAX_LISTED]) or 'none'}{more}")
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


def _check_chunks(ds, report: VerifyReport) -> list[tuple[int, ...]] | None:
    # Every stored chunk's checksum; returns the stored offsets (None: unverifiable).
    dcpl = ds.id.get_create_plist()
    filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
    if _FLETCHER32 not in filters:
        report.messages.append(f"{FRAMES_PATH} has no fletcher32 filter: chunks unverifiable")
        report.ok = False
        return None
    direct = filters == [_FLETCHER32]
    dsid = ds.id
    stored = []
    for i in range(dsid.get_num_chunks()):
        info = dsid.get_chunk_info(i)
        offset = tuple(int(o) for o in info.chunk_offset)
        stored.append(offset)
        error = None
        try:
            if direct:
                mask, raw = dsid.read_direct_chunk(offset)
                body, stored_sum = split_chunk(raw)
                computed = fletcher32(body)
                if mask != 0:
                    error = f"filter mask {mask:#x} (fletcher32 skipped)"
                elif computed != stored_sum:
                    error = (
                        f"fletcher32 mismatch: stored {stored_sum:#010x}, "
                        f"computed {computed:#010x}"
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
    return stored


def _check_claims(ds, received: np.ndarray, stored, report: VerifyReport) -> None:
    # A frame the map claims must sit in a stored chunk: a chunk that is not on disk
    # (an index entry lost, a crash between writes that broke the flush order) is as
    # bad as a corrupt one.
    scan, cs = ds.shape[:-2], ds.chunks[:-2]
    grid = tuple(-(-s // c) for s, c in zip(scan, cs, strict=True))
    on_disk = np.zeros(grid, dtype=bool)
    for offset in stored:
        on_disk[tuple(o // c for o, c in zip(offset[:-2], cs, strict=True))] = True
    padded = np.zeros(tuple(g * c for g, c in zip(grid, cs, strict=True)), dtype=bool)
    padded[tuple(slice(0, s) for s in scan)] = received != 0
    split = [d for pair in zip(grid, cs, strict=True) for d in pair]
    claimed = padded.reshape(split).any(axis=tuple(range(1, 2 * len(grid), 2)))
    flat = (received != 0).reshape(-1)
    for cell in np.argwhere(claimed & ~on_disk):
        offset = (*(int(g) * c for g, c in zip(cell, cs, strict=True)), 0, 0)
        frames = [i for i in _frames_of(offset, ds.chunks, ds.shape) if flat[i]]
        report.corrupt_chunks.append(
            {
                "offset": offset,
                "frames": frames,
                "error": "not on disk, but the received map claims these frames",
            }
        )


def _ranges(flags: np.ndarray) -> list[list[int]]:
    # Runs of consecutive flat indices that are set, as [first, last].
    idx = np.flatnonzero(flags)
    if not idx.size:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]]
    return [[int(a), int(b)] for a, b in zip(starts, ends, strict=True)]


def _read_status(path, report: VerifyReport):
    # The superblock says whether the writer closed the file. Returns (open with SWMR?,
    # superblock), or None where HDF5 cannot open the file at all.
    try:
        sb = read_superblock(path)
    except (OSError, ValueError):
        return False, None  # not a version 2/3 superblock: h5py says what is wrong
    size = os.path.getsize(path)
    if size < sb.eof_address:
        report.ok = False
        report.messages.append(
            f"truncated: the file is {size} bytes, {sb.eof_address - size} fewer than the "
            f"end-of-file address {sb.eof_address} in its superblock"
        )
    if not sb.unclosed:
        return False, sb
    report.closed = False
    if not sb.swmr:
        report.ok = False
        report.messages.append(
            f"not closed by its writer, which had not started SWMR writing (superblock "
            f"status flags {sb.flags:#04x}, SWMR writing is 0x05): HDF5 cannot open it; a "
            "FrameWriter writes no frame before SWMR starts"
        )
        return None
    return True, sb


def _describe_unclosed(path, sb, report: VerifyReport) -> None:
    report.writers = open_writers(path) or []
    if report.writers:
        who = f"writer still running: open for writing by process {', '.join(report.writers)}"
    else:
        who = "writer killed, or running where this host cannot see it"
    n = report.frames_received
    bad = report.frames_unverified
    checked = f"all {n} in checksum-verified chunks" if not bad else f"{bad} of them not"
    report.messages.insert(
        0,
        f"not closed by its writer ({who}): the received map shows {n} of "
        f"{report.frames_expected} frames, {checked}",
    )
    report.messages.append(
        f"readers without SWMR cannot open it (superblock status flags {sb.flags:#04x}, "
        f"end-of-file address {sb.eof_address}, file length {os.path.getsize(path)}): "
        "`bluestem verify --repair` rewrites the superblock, and nothing else, so they can"
    )


@functools.cache
def _set_read_attempts():
    # h5py has no H5Pset_metadata_read_attempts: call it in the libhdf5 h5py loaded.
    # None (HDF5's own retries) where that library cannot be found.
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "libhdf5" in line}
    for path in paths:
        if os.path.basename(path).split("-")[0].split(".")[0] == "libhdf5":
            func = ctypes.CDLL(path).H5Pset_metadata_read_attempts
            func.argtypes, func.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
            return func
    return None


def _open_swmr(path):
    import h5py

    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)  # as h5py.File's own
    try:
        setter = _set_read_attempts()
    except (OSError, AttributeError):
        setter = None
    if setter is not None:
        setter(fapl.id, _SWMR_READ_ATTEMPTS)
    flags = h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ
    return h5py.File(h5py.h5f.open(os.fsencode(path), flags, fapl=fapl))


def _check_file(f, report: VerifyReport) -> None:
    missing = [a for a in REQUIRED_FILE_ATTRS if a not in f.attrs]
    if missing:
        report.ok = False
        report.messages.append(f"missing file attributes: {', '.join(missing)}")
    if FRAMES_PATH not in f:
        report.ok = False
        report.messages.append(f"missing frames dataset {FRAMES_PATH}")
        return
    ds = f[FRAMES_PATH]
    received = None
    if RECEIVED_PATH in f:
        # Read before the chunk index: the writer flushes chunks before the map, so
        # every frame this map claims is in the index read after it.
        received = f[RECEIVED_PATH][...]
        report.frames_expected = int(received.size)
        report.frames_received = int(np.count_nonzero(received))
        report.dropped_indices = [int(i) for i in np.flatnonzero(received == 0)]
        report.received_ranges = _ranges(received.reshape(-1))
        if received.shape != ds.shape[:-2]:
            report.ok = False
            report.messages.append(
                f"received map shape {received.shape} is not the scan shape {ds.shape[:-2]}"
            )
            received = None
    else:
        report.ok = False
        report.frames_expected = int(np.prod(ds.shape[:-2]))
        report.messages.append(f"missing received map {RECEIVED_PATH}")
    stored = _check_chunks(ds, report)
    if received is not None and stored is not None:
        _check_claims(ds, received, stored, report)
        flat = received.reshape(-1) != 0
        bad = {i for c in report.corrupt_chunks for i in c["frames"] if flat[i]}
        report.frames_unverified = len(bad)


def verify_file(path: str | os.PathLike) -> VerifyReport:
    """Verify a raw-frame file: every chunk's fletcher32, the received map, the attrs.

    A file its writer never closed (killed, or still writing) is opened in SWMR mode and
    verified the same way: the report says so (``closed`` False) and which frames the
    received map shows; each of them must be in a stored chunk that checks out.

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
    status = _read_status(path, report)
    if status is None:
        return report
    swmr, sb = status
    try:
        # SWMR read is what HDF5 allows on a file a SWMR writer left open: it skips the
        # status-flag and end-of-file checks that a plain read-only open makes.
        with _open_swmr(path) if swmr else h5py.File(path, "r") as f:
            _check_file(f, report)
    except Exception as exc:
        report.ok = False
        report.messages.append(f"unreadable: {type(exc).__name__}: {exc}")
    if report.corrupt_chunks:
        report.ok = False
    if not report.closed:
        _describe_unclosed(path, sb, report)
    return report
