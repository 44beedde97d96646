"""The frame file writer: ``PFX:DET:HDF1:`` (areaDetector HDF5 plugin names)."""

from __future__ import annotations

import os

from caproto import ChannelType
from caproto.server import pvproperty

from .settings import SettingsGroup, long_string, readback, setting
from .validation import InvalidSetting, Limits, check_directory

__all__ = ["HDFWriter", "format_file_name"]

WRITE_STATUS = ("Write OK", "Write error")
COMPRESSION = ("None", "bitshuffle-lz4")


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

    PVs (settings with ``_RBV``): FilePath (an existing writable directory), FileName (a
    name stem without ``/``),
    FileTemplate (default ``%s%s_%6.6d.h5``), FileNumber, AutoIncrement (No/Yes),
    NumCapture (frames of an internally triggered file), Compression
    (None/bitshuffle-lz4); Capture (1 opens the file, 0 closes it; Capture_RBV);
    read-only FullFileName_RBV, NumCaptured_RBV, DroppedFrames_RBV, WriteStatus
    (Write OK/Write error), WriteMessage, FilePathExists_RBV.  Long strings are CHAR
    waveforms.
    """

    message_attr = "write_message"

    file_path, file_path_rbv = setting(
        "FilePath", "", "Directory of the frame files.", dtype=ChannelType.CHAR
    )
    file_name, file_name_rbv = setting(
        "FileName", "scan", "File name stem.", dtype=ChannelType.CHAR
    )
    file_template, file_template_rbv = setting(
        "FileTemplate", "%s%s_%6.6d.h5", "printf template of path, name, number.",
        dtype=ChannelType.CHAR,
    )  # fmt: skip
    file_number, file_number_rbv = setting(
        "FileNumber", 1, "Number of the next file.", limits=Limits(0, 2**31 - 1, integer=True)
    )
    auto_increment, auto_increment_rbv = setting(
        "AutoIncrement", "Yes", "Increment FileNumber after each successful capture.",
        enum_strings=("No", "Yes"),
    )  # fmt: skip
    num_capture, num_capture_rbv = setting(
        "NumCapture", 1, "Frames in an internally triggered file.",
        limits=Limits(1, 2**31 - 1, integer=True),
    )  # fmt: skip
    compression, compression_rbv = setting(
        "Compression", "None", "Chunk compression.", enum_strings=COMPRESSION
    )
    capture = pvproperty(name="Capture", value=0, doc="1 opens a new file; 0 closes it.")
    capture_rbv = readback("Capture_RBV", 0, "1 while a file is open for capture.")
    full_file_name = long_string(
        "FullFileName_RBV", "", "The file being (or last) written.", read_only=True
    )
    num_captured = readback("NumCaptured_RBV", 0, "Frames written to the current/last file.")
    dropped_frames = readback("DroppedFrames_RBV", 0, "Frames the detector never delivered.")
    write_status = readback("WriteStatus", "Write OK", "Writer health.", enum_strings=WRITE_STATUS)
    write_message = long_string(
        "WriteMessage", "", "Writer message or the last refused write.", read_only=True
    )
    file_path_exists = readback(
        "FilePathExists_RBV", 0, "1 when FilePath is an existing, writable directory."
    )

    @capture.putter
    async def capture(self, instance, value):
        if value not in (0, 1):
            raise InvalidSetting(instance.pvname, f"{value!r} is not allowed (allowed: 0, 1)")
        if value:
            await self.root.open_capture()
        else:
            await self.root.close_capture()
        await self.root.clear_flag(instance)
        return value

    async def setting_changed(self, spec, value) -> None:
        if spec.name == "FilePath":
            pvname = self.pv("FilePath").pvname
            try:
                check_directory(pvname, value)
            except InvalidSetting:
                await self.file_path_exists.write(0)
                raise
            await self.file_path_exists.write(1)
        elif spec.name == "FileName":
            if not value or "/" in value or "\0" in value or value in (".", ".."):
                raise InvalidSetting(
                    self.pv("FileName").pvname,
                    f"{value!r} is not a file name stem (allowed: a non-empty name without "
                    "'/': the directory is FilePath)",
                )
        elif spec.name == "FileTemplate":
            format_file_name(value, "", "", 0)
        await super().setting_changed(spec, value)

    def next_file(self) -> str:
        """The file a capture would open now."""
        return format_file_name(
            self.file_template_rbv.value,
            self.file_path_rbv.value,
            self.file_name_rbv.value,
            int(self.file_number_rbv.value),
        )
