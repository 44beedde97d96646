"""Blocks: the frame ranges a run announces, and reading them from a raw-frame file.

A *block* is what one ``stream_datum`` announces: a contiguous range of frames of one raw
file, at a known place in the scan. This module says which positions blocks cover and
reads a range of frames together with its ``received`` map (only frames the detector
delivered are ever reduced); :mod:`bluestem.reduce.executors` reduces blocks.

Importing it loads neither numba nor h5py: :mod:`bluestem.frames` is imported when a file
is opened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NOT_WRITTEN_TIMEOUT",
    "READ_FRAMES",
    "RECEIVED_GRACE",
    "TORN_RETRIES",
    "Block",
    "add_received",
    "covered",
    "frames_in",
    "open_reader",
    "read_received",
    "received_runs",
]

# Frames of one read in the local path: whole chunks, a few MiB, so the snapshot the live
# images see advances smoothly within a big block.
READ_FRAMES = 256
# How long a block whose chunks are not yet visible (SWMR: the writer's flush follows its
# counters) is retried before the reduction gives up on it.
NOT_WRITTEN_TIMEOUT = 10.0
# Reads of a chunk whose checksum fails before it counts as corrupt (see read_received).
TORN_RETRIES = 5
# How long an announced frame the received map does not show yet is waited for: longer
# than the writer's flush interval (0.5 s), so only dropped and late frames exceed it.
RECEIVED_GRACE = 0.6


@dataclass(frozen=True)
class Block:
    """A range of frames of one raw file, at its place in the scan.

    Frames ``first .. first + count - 1`` of dataset ``dataset`` of ``path`` are scan
    positions ``position .. position + count - 1`` (flat, row-major).

    Attributes
    ----------
    path, dataset : str
        The raw-frame file and its frame dataset.
    first, count, position : int
        First frame in the file, number of frames, first scan position.
    received_at : float
        When its announcement arrived (the live reduction's clock), for the lag.
    datum : str
        The announcing ``stream_datum``'s uid (empty when not announced).
    """

    path: str
    dataset: str
    first: int
    count: int
    position: int
    received_at: float = 0.0
    datum: str = ""


def covered(blocks, size: int) -> np.ndarray:
    """Flat bool mask of the ``size`` scan positions the ``blocks`` cover."""
    mask = np.zeros(size, dtype=bool)
    for block in blocks:
        mask[block.position : block.position + block.count] = True
    return mask


def frames_in(blocks) -> int:
    """Frames the ``blocks`` announce."""
    return sum(block.count for block in blocks)


def received_runs(received: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], received.view(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def open_reader(path: str, dataset: str, verify: bool, threads: int = 2):
    """A :class:`bluestem.frames.FrameReader` for a block's file.

    Raises
    ------
    ValueError
        ``dataset`` is not the bluestem raw-frame dataset (FrameWriter layout).
    """
    from bluestem.frames import FRAMES_PATH, FrameReader

    if dataset != FRAMES_PATH:
        raise ValueError(
            f"{path}: dataset {dataset!r} is not a bluestem raw-frame dataset "
            f"(allowed: {FRAMES_PATH!r}, as written by the detector IOC)"
        )
    return FrameReader(path, verify=verify, threads=threads)


def read_received(
    reader, first: int, count: int, *, wait: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Frames and received map of a range, waiting while the writer's flush catches up
    (``wait=False``: raise ``FramesNotWritten`` at once).

    With ``wait``, frames the ``received`` map does not show yet are read again for up to
    ``RECEIVED_GRACE``: the writer counts a frame as written (NumCaptured_RBV) before its
    flush makes the map visible to this reader. Frames still not received after that are
    dropped or late, and returned as such; so are the frames of chunks a writer that has
    closed the file never wrote (it failed: a full disk).

    A checksum mismatch is read again a few times first: a chunk written with a gap is
    rewritten in place when its late frame arrives, and a read during that rewrite sees
    half of each. A chunk that is really corrupt fails every time, and is raised.
    """
    from bluestem.frames import ChecksumError, FramesNotWritten

    now = time.monotonic()
    deadline, grace = now + NOT_WRITTEN_TIMEOUT, now + RECEIVED_GRACE
    torn = 0
    while True:
        try:
            received = reader.received(first, count)
            frames = reader.read(first, count)
            if not wait or received.all() or time.monotonic() > grace:
                return frames, received
        except FramesNotWritten:
            if reader.writer_closed():
                # The writer stopped short (disk full, a fault): the missing chunks
                # will never come, so their frames are missing, not late.
                frames, written = reader.read_written(first, count)
                return frames, reader.received(first, count) & written
            if not wait or time.monotonic() > deadline:
                raise
        except ChecksumError:
            torn += 1
            if torn > TORN_RETRIES:
                raise
        time.sleep(0.005)
        reader.refresh()


def add_received(reducer, frames: np.ndarray, received: np.ndarray, position: int) -> int:
    """Add only frames the detector delivered to ``reducer`` (a dropped frame stays NaN,
    never zero); returns how many were added."""
    if received.all():
        reducer.add(position, frames)
        return len(frames)
    done = 0
    for a, b in received_runs(received):
        reducer.add(position + a, frames[a:b])
        done += b - a
    return done
