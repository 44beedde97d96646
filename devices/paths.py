"""Where a detector's IOC writes a run's file: one injected path provider.

In the style of ophyd-async's ``PathProvider``: a detector is given a callable that, asked
for a device's name, answers the directory and the file name (stem) of the next file.
Plans never compose file names; the detector asks its provider when it is prepared
(:meth:`~bluestem.devices.PixelatedDetector.prepare`), unless the plan names the file
itself (``file_stem=``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["PathInfo", "PathProvider", "UUIDPathProvider", "resolve_path"]


@dataclass(frozen=True)
class PathInfo:
    """Where one file is written.

    Attributes
    ----------
    directory : str
        Directory the IOC writes into, as the IOC sees it (``HDF1:FilePath``).
    filename : str
        File name stem, without the IOC's template (``HDF1:FileName``).
    """

    directory: str
    filename: str


@runtime_checkable
class PathProvider(Protocol):
    """Answers where the next file of a device goes."""

    def __call__(self, device_name: str) -> PathInfo:
        """The directory and file name stem of the next file of ``device_name``.

        Parameters
        ----------
        device_name : str
            The name the file is for: the device's name, or the device's name with a
            label (``"det-dark"`` for a dark reference).

        Returns
        -------
        PathInfo
        """
        ...


class UUIDPathProvider:
    """Every file in one directory, named ``{device_name}-{uuid4}`` (never reused).

    Parameters
    ----------
    root : str or os.PathLike
        Directory the IOC writes into (as the IOC sees it; the same path here).
    """

    def __init__(self, root: str | os.PathLike):
        text = str(root)
        if not text:
            raise ValueError(f"root={root!r}: allowed a directory path")
        self.root = str(Path(text))

    def __call__(self, device_name: str) -> PathInfo:
        """``PathInfo(root, f"{device_name}-{uuid4()}")``."""
        return PathInfo(self.root, f"{device_name}-{uuid.uuid4()}")

    def __repr__(self) -> str:
        return f"UUIDPathProvider({self.root!r})"


def resolve_path(
    provider: PathProvider,
    device_name: str,
    *,
    file_stem: str | None = None,
    label: str | None = None,
) -> PathInfo:
    """Where a device's next file goes: the provider's answer, the file name replaced
    by ``file_stem`` when one is given.

    Parameters
    ----------
    provider : PathProvider
        Asked for ``device_name``, or ``{device_name}-{label}`` when ``label`` is given
        (``"det-dark"``: a dark reference's files say so in their names).
    device_name : str
        The detector's name.
    file_stem : str, optional
        A file name chosen by the plan (its ``file_stem=`` argument); the directory
        stays the provider's.
    label : str, optional
        What the file is (``"dark"``).

    Returns
    -------
    PathInfo

    Raises
    ------
    ValueError
        The provider answered something else than a PathInfo with a directory and a
        file name.
    """
    asked = f"{device_name}-{label}" if label else device_name
    info = provider(asked)
    if not isinstance(info, PathInfo) or not info.directory or not info.filename:
        raise ValueError(
            f"{device_name}: path provider {provider!r} answered {info!r}; allowed a "
            "PathInfo with a directory and a file name"
        )
    return PathInfo(info.directory, str(file_stem)) if file_stem else info
