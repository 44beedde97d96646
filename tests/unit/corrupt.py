"""Corrupting a raw-frame file on purpose: one bit of one stored chunk (verify, reader and
live-reduction tests)."""

from __future__ import annotations

import os

import h5py

from bluestem.frames import FRAMES_PATH


def chunk_location(path, offset) -> tuple[int, int]:
    """(byte offset in the file, stored size) of the chunk at logical ``offset``."""
    with h5py.File(path, "r") as f:
        info = f[FRAMES_PATH].id.get_chunk_info_by_coord(offset)
        return info.byte_offset, info.size


def flip(path, position: int) -> None:
    """Flip one bit of the byte at ``position`` (the writer left the file read-only)."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(position)
        byte = fh.read(1)[0]
        fh.seek(position)
        fh.write(bytes([byte ^ 0x10]))


def flip_in_chunk(path, offset, where: int) -> None:
    """Flip a bit ``where`` bytes into the chunk at ``offset`` (negative: from its end)."""
    start, size = chunk_location(path, offset)
    flip(path, start + (where if where >= 0 else size + where))
