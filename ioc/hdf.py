"""The frame file writer: ``PFX:DET:HDF1:`` (areaDetector HDF5 plugin names)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np
from caproto import ChannelType
from caproto.server import pvproperty

from bluestem.instrument import AutoIncrement, Compression, WriteStatus, names

from .file_paths import check_file_name, check_file_path, check_full_name
from .settings import LONG_STRING, SettingsGroup, long_string, readback, setting
from .status import error_text, wire_text
from .threads import run_in_background_thread
from .validation import (
    InvalidSetting,
    Limits,
    check_directory,
    check_free_space,
    estimate_file_bytes,
)

__all__ = ["HDFWriter", "format_file_name"]

#: Most entries of ``ChunkShape_RBV``: (1, row frames, ky, kx) for a scan.
CHUNK_RANK = 4


def format_file_name(template: str, path: str, name: str, number: int) -> str:
    """areaDetector's FullFileName: ``template % (path, name, number)``."""
    if path and not path.endswith(os.sep):
        path += os.sep
    try:
        return template % (path, name, number)
    except (TypeError, ValueError) as exc:
        raise InvalidSetting(
            "FileTemplate",
            f"{template!r} is not a valid template ({exc}; allowed: a printf format taking "
            "path, name and number, e.g. '%s%s_%6.6d.h5')",
        ) from exc


class HDFWriter(SettingsGroup):
    """Where and how frames are written (prefix ``DET:HDF1:``).

    PVs (settings with ``_RBV``): FilePath (an existing writable directory at or under the
    IOC's data root), FileName (a name stem without ``/``, at most 200 bytes),
    FileTemplate (default ``%s%s_%6.6d.h5``), FileNumber, AutoIncrement (No/Yes),
    NumCapture (frames of an internally triggered file), Compression
    (None/bitshuffle-lz4); Capture (1 opens the file, 0 closes it; Capture_RBV);
    read-only FullFileName_RBV, NumCaptured_RBV, DroppedFrames_RBV, WriteStatus
    (Write OK/Write error), WriteMessage, FilePathExists_RBV, FreeSpace_RBV (MB), and
    ChunkShape_RBV (integer waveform of at most 4 entries: the HDF5 chunk shape of the
    frames dataset of the file being, or last, written, e.g. ``[1, 64, 128, 128]`` for a
    scan and 3 entries for a series; written when the file opens, before Capture_RBV
    becomes 1).  Long strings are CHAR waveforms.

    Like areaDetector's HDF5 plugin it owns its file: :meth:`open_file` checks the
    directory and the free space, opens a :class:`bluestem.frames.FrameWriter` (the
    :attr:`writer` the instrument hands to its acquisition engine) and publishes the
    file's name and chunk shape; :meth:`counts`, :meth:`close_file` and
    :meth:`file_closed` publish what was written.
    """

    message_attr = "write_message"

    #: The writer's fsync interval (s; None: never), from ``--sync-interval``.
    sync_interval: float | None = None

    file_path, file_path_rbv = setting(
        "FilePath", "", "Directory of the frame files.", dtype=ChannelType.CHAR
    )

    @file_path.applies
    async def file_path(self, setting, value) -> None:
        """FilePath must be an existing, writable directory under the data root
        (FilePathExists_RBV says) that the template formats a file in."""
        pv = self.pv(setting.name).pvname
        try:
            check_file_path(pv, value, self._root)
            check_directory(pv, value)
        except InvalidSetting:
            await self.file_path_exists.write(0)
            raise
        self._check_file(pv, value, path=value)
        await self.file_path_exists.write(1)
        await self.read_back(setting, value)

    file_name, file_name_rbv = setting(
        "FileName", "scan", "File name stem.", dtype=ChannelType.CHAR
    )

    @file_name.applies
    async def file_name(self, setting, value) -> None:
        """FileName is a stem: the directory is FilePath."""
        pv = self.pv(setting.name).pvname
        check_file_name(pv, value)
        self._check_file(pv, value, name=value)
        await self.read_back(setting, value)

    file_template, file_template_rbv = setting(
        "FileTemplate", "%s%s_%6.6d.h5", "printf template of path, name, number.",
        dtype=ChannelType.CHAR,
    )  # fmt: skip

    @file_template.applies
    async def file_template(self, setting, value) -> None:
        """FileTemplate must format (path, name, number) into a file in FilePath."""
        self._check_file(self.pv(setting.name).pvname, value, template=value)
        await self.read_back(setting, value)

    file_number, file_number_rbv = setting(
        "FileNumber", 1, "Number of the next file.", limits=Limits(0, 2**31 - 1, integer=True)
    )
    auto_increment, auto_increment_rbv = setting(
        "AutoIncrement", AutoIncrement.YES, "Increment FileNumber after each successful capture.",
        enum_strings=names(AutoIncrement),
    )  # fmt: skip
    num_capture, num_capture_rbv = setting(
        "NumCapture", 1, "Frames in an internally triggered file.",
        limits=Limits(1, 2**31 - 1, integer=True),
    )  # fmt: skip
    compression, compression_rbv = setting(
        "Compression", Compression.NONE, "Chunk compression.", enum_strings=names(Compression)
    )
    capture = pvproperty(name="Capture", value=0, doc="1 opens a new file; 0 closes it.")
    capture_rbv = readback("Capture_RBV", 0, "1 while a file is open for capture.")

    @capture.putter
    async def capture(self, instance, value):
        if value not in (0, 1):
            raise InvalidSetting(instance.pvname, f"{value!r} is not allowed (allowed: 0, 1)")
        if value:
            await self.control.open_capture()
        else:
            await self.control.close_capture()
        await self.cleared(instance)
        return value

    full_file_name = long_string(
        "FullFileName_RBV", "", "The file being (or last) written.", read_only=True
    )
    num_captured = readback("NumCaptured_RBV", 0, "Frames written to the current/last file.")
    dropped_frames = readback("DroppedFrames_RBV", 0, "Frames the detector never delivered.")
    write_status = readback(
        "WriteStatus", WriteStatus.OK, "Writer health.", enum_strings=names(WriteStatus)
    )
    write_message = long_string(
        "WriteMessage", "", "Writer message or the last refused write.", read_only=True
    )
    file_path_exists = readback(
        "FilePathExists_RBV", 0, "1 when FilePath is an existing, writable directory."
    )
    free_space = readback(
        "FreeSpace_RBV", -1.0, "Free space of the file system of FilePath (of the data root "
        "while FilePath does not exist), updated each second; -1 when unknown.", units="MB",
    )  # fmt: skip
    chunk_shape = pvproperty(
        name="ChunkShape_RBV", value=[], dtype=int, max_length=CHUNK_RANK, read_only=True,
        doc="HDF5 chunk shape of the frames of the file being (or last) written: "
        "(1, frames, ky, kx) for a scan, (frames, ky, kx) for a series; set before "
        "Capture_RBV becomes 1.",
    )  # fmt: skip

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._writer = None
        self._root = ""  # the data root; set when the IOC starts

    @property
    def writer(self):
        """The open :class:`bluestem.frames.FrameWriter` (a FrameSink), or None."""
        return self._writer

    @property
    def capturing(self) -> bool:
        """True while a file is open."""
        return self._writer is not None

    # -- what the instrument reads ----------------------------------------------------
    def next_file(self, *, path=None, name=None, template=None) -> str:
        """The file a capture would open now (or with one setting changed)."""
        return format_file_name(
            self.file_template_rbv.value if template is None else template,
            self.file_path_rbv.value if path is None else path,
            self.file_name_rbv.value if name is None else name,
            int(self.file_number_rbv.value),
        )

    def _check_file(self, pv: str, value: str, *, path=None, name=None, template=None) -> str:
        """:meth:`next_file` with one setting changed, if it is allowed."""
        full = self.next_file(path=path, name=name, template=template)
        return check_full_name(pv, value, full, path or self.file_path_rbv.value, self._root)

    def capture_length(self) -> int:
        """Frames of an internally triggered file (NumCapture_RBV)."""
        return int(self.num_capture_rbv.value)

    async def update_free_space(self) -> None:
        """Publish ``FreeSpace_RBV`` (a suspender of the session pauses a scan below a
        threshold, before the disk fills)."""
        free = -1.0
        for where in (self.file_path_rbv.value, self._root):
            if where and os.path.isdir(where):
                try:
                    free = shutil.disk_usage(where).free / 1e6
                except OSError:
                    continue
                break
        if abs(free - self.free_space.value) >= 0.01:
            await self.free_space.write(round(free, 2))

    # -- the file ---------------------------------------------------------------------
    async def started(self, data_dir: str) -> None:
        """The IOC starts: FilePath is ``data_dir`` (if given), FullFileName_RBV the
        file a capture would open. ``data_dir`` is the root the IOC writes under."""
        self._root = os.path.realpath(data_dir) if data_dir else ""
        if data_dir:
            await self.file_path.write(data_dir, verify_value=False)
            await self.file_path_rbv.write(data_dir)
            await self.file_path_exists.write(int(os.path.isdir(data_dir)))
        await self.full_file_name.write(self.next_file())

    async def open_file(
        self,
        *,
        scan_shape: tuple[int, ...],
        frame_shape: tuple[int, int],
        dtype: np.dtype,
        metadata: Mapping[str, Any],
        calibration: Mapping[str, Any],
    ) -> None:
        """Open the next file (FullFileName) for frames of ``scan_shape``.

        Parameters
        ----------
        scan_shape : tuple of int
            ``(ny, nx)`` for a scan, ``(n,)`` for a series.
        frame_shape : tuple of int
            ``(ky, kx)`` of one frame.
        dtype : numpy dtype
            Pixel type.
        metadata, calibration : mapping
            The file's ``/metadata`` groups and calibration
            (:func:`bluestem.ioc.metadata.file_metadata`, :func:`~.calibration`).

        Raises
        ------
        InvalidSetting
            When FilePath is not a writable directory, the file exists (files are never
            overwritten), it would not fit the free space, or it cannot be opened.
        """
        pv = self.capture.pvname
        path = self.file_path_rbv.value
        try:
            check_file_path(self.file_path.pvname, path, self._root)
            check_directory(self.file_path.pvname, path)
        except InvalidSetting:
            await self.file_path_exists.write(0)
            raise
        full = self._check_file(pv, self.file_template_rbv.value)
        if os.path.exists(full):
            raise InvalidSetting(
                pv, f"{full!r} exists and is never overwritten (allowed: a new FileNumber/Name)"
            )
        n = 1
        for s in scan_shape:
            n *= s
        needed = estimate_file_bytes(n, frame_shape, np.dtype(dtype).itemsize)
        try:
            check_free_space(pv, path, needed)
        except InvalidSetting as exc:
            raise InvalidSetting(pv, f"scan shape {scan_shape}: {exc}") from None
        from bluestem.frames import FrameWriter

        compression = self.compression_rbv.value
        writer = FrameWriter(
            full,
            scan_shape=scan_shape,
            frame_shape=frame_shape,
            dtype=dtype,
            compression=None if compression == Compression.NONE else compression,
            metadata=metadata,
            calibration=calibration,
            sync_interval=self.sync_interval,
        )
        try:
            # The writer's thread inherits the low priority of the thread that opens it.
            await asyncio.to_thread(run_in_background_thread, writer.open)
        except (OSError, ValueError) as exc:
            await self._write_status(False, f"cannot open {full}: {exc}")
            raise InvalidSetting(pv, f"cannot open {full!r}: {exc}") from exc
        self._writer = writer
        await self.full_file_name.write(full)
        await self.num_captured.write(0)
        await self.dropped_frames.write(0)
        await self._write_status(True, f"Capturing to {full}")
        await self.chunk_shape.write([int(v) for v in writer.grid.chunk_shape])
        await self.capture_rbv.write(1)

    async def counts(self, written: int, dropped: int) -> None:
        """``written`` frames are in the open file, ``dropped`` were never delivered."""
        if self._writer is not None and written != self.num_captured.value:
            await self.num_captured.write(written)
        if dropped != self.dropped_frames.value:
            await self.dropped_frames.write(dropped)

    async def close_file(self) -> None:
        """Close the open file (no engine feeds it) and publish what it holds."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        summary = await asyncio.to_thread(writer.close)
        await self.file_closed(summary, dropped=0, error=None)

    async def file_closed(self, summary, *, dropped: int, error: BaseException | None) -> None:
        """The file was closed (by the engine, or :meth:`close_file`).

        Parameters
        ----------
        summary : bluestem.frames.WriteSummary or None
            What the writer wrote (None when it failed before summing up).
        dropped : int
            Positions visited whose frame is not in the file.
        error : exception or None
            Why the acquisition failed.
        """
        self._writer = None
        if summary is not None:
            await self.num_captured.write(int(summary.frames_written))
        await self.dropped_frames.write(int(dropped))
        if error is None and summary is not None:
            await self._write_status(
                True,
                f"Wrote {summary.frames_written} of {summary.frames_expected} frames "
                f"({dropped} dropped) to {summary.path} in {summary.seconds:.2f} s",
            )
        else:
            why = error_text(error) if error is not None else "the writer gave no summary"
            file = self.full_file_name.value
            await self._write_status(False, f"{WriteStatus.ERROR}: {why} (file {file})")
        await self.capture.write(0, verify_value=False)
        await self.capture_rbv.write(0)
        if self.auto_increment_rbv.value == AutoIncrement.YES:
            number = int(self.file_number_rbv.value) + 1
            await self.file_number.write(number, verify_value=False)
            await self.file_number_rbv.write(number)

    def abort_file(self) -> None:
        """Close the open file at once, read-only (the IOC exits; blocking)."""
        if self._writer is not None:
            self._writer.abort()

    async def _write_status(self, ok: bool, message: str) -> None:
        await self.write_status.write((WriteStatus.OK if ok else WriteStatus.ERROR).value)
        await self.write_message.write(wire_text(message, LONG_STRING - 1))
