"""Where the frame writer may write: in FilePath, under the IOC's data root, nowhere else.

areaDetector's HDF5 plugin writes wherever ``FileTemplate % (FilePath, FileName,
FileNumber)`` points, so any CA client could make it write anywhere the IOC's user may
(a template ``%.0s/elsewhere/%s_%6.6d.h5``, a FilePath ``../../x``, a FileName holding
``/``). Here the data root (``--data-dir``) is a boundary: FilePath must be an absolute
directory at or under it (symbolic links resolved), FileName a plain stem short enough for
a file name, and the formatted full name must lie directly in FilePath. Every check runs
when the setting is written (the put is refused, naming the value and what is allowed)
and again just before a file is opened, so no sequence of puts gets past it. os.path only.
"""

from __future__ import annotations

import os

from .validation import InvalidSetting

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_STEM_BYTES",
    "check_file_name",
    "check_file_path",
    "check_full_name",
]

#: Longest file name (one path component) the common file systems take (NAME_MAX).
MAX_NAME_BYTES = 255
#: Longest FileName stem: room for the template's ``_000001.h5`` and more.
MAX_STEM_BYTES = 200


def _inside(path: str, root: str) -> bool:
    """True when the resolved ``path`` is ``root`` or below it (``root`` resolved)."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def check_file_path(pv: str, path: str, root: str) -> str:
    """Refuse a FilePath that is relative or not at/under ``root`` (no root: any).

    A missing absolute directory passes: :func:`~.validation.check_directory` names it as
    missing (and that check writes a probe file, so this one runs first).
    """
    if not root:
        return path
    if not os.path.isabs(path):
        raise InvalidSetting(
            pv, f"{path!r} is a relative path (allowed: an absolute directory under {root!r})"
        )
    if os.path.isdir(path) and not _inside(path, root):
        raise InvalidSetting(
            pv,
            f"{path!r} is outside the data root (allowed: {root!r} or a directory under it; "
            f"it resolves to {os.path.realpath(path)!r})",
        )
    return path


def check_file_name(pv: str, name: str) -> str:
    """Refuse a FileName that is not a plain stem of at most :data:`MAX_STEM_BYTES`."""
    allowed = (
        f"allowed: a non-empty name of at most {MAX_STEM_BYTES} bytes without '/', "
        "control characters, '.' or '..': the directory is FilePath"
    )
    if not name or name in (".", "..") or os.sep in name or "/" in name:
        raise InvalidSetting(pv, f"{name!r} is not a file name stem ({allowed})")
    bad = [c for c in name if ord(c) < 0x20 or ord(c) == 0x7F]
    if bad:
        raise InvalidSetting(pv, f"{name!r} holds control character {bad[0]!r} ({allowed})")
    size = len(name.encode())
    if size > MAX_STEM_BYTES:
        shown = name if len(name) <= 40 else f"{name[:20]}...{name[-10:]}"
        raise InvalidSetting(pv, f"{shown!r} is {size} bytes long ({allowed})")
    return name


def check_full_name(pv: str, value: str, full: str, path: str, root: str) -> str:
    """Refuse a formatted file name that is not directly in ``path`` (and under ``root``).

    Parameters
    ----------
    pv, value : str
        The PV and value to name in the refusal (the setting written, or Capture and the
        template).
    full : str
        ``FileTemplate % (FilePath, FileName, FileNumber)``.
    path : str
        FilePath.
    root : str
        The data root ('' when the IOC has none: only the FilePath rule holds).
    """
    directory, base = os.path.split(full)
    example = "e.g. '%s%s_%6.6d.h5'"
    # The value and what is allowed first: message PVs hold 255 characters.
    if not base or base in (".", ".."):
        raise InvalidSetting(
            pv, f"{value!r} names no file (allowed: a template ending in a file name, "
            f"{example}); it formats {full!r}",
        )  # fmt: skip
    if len(base.encode()) > MAX_NAME_BYTES:
        raise InvalidSetting(
            pv, f"{value!r} makes a file name of {len(base.encode())} bytes (allowed: at most "
            f"{MAX_NAME_BYTES})",
        )  # fmt: skip
    if path and os.path.realpath(directory or os.curdir) != os.path.realpath(path):
        raise InvalidSetting(
            pv, f"{value!r} puts the file outside FilePath (allowed: a file directly in "
            f"FilePath, {example}); it formats {full!r}",
        )  # fmt: skip
    if root and not _inside(directory or os.curdir, root):
        raise InvalidSetting(
            pv, f"{value!r} puts the file outside the data root (allowed: a file under "
            f"{root!r}); it formats {full!r}",
        )  # fmt: skip
    return full
