"""Raw-frame HDF5 files: the writer, the checksum, the verifier and the repair.

See docs/data-layout.md for the file layout.
"""

from bluestem.frames.checksum import fletcher32
from bluestem.frames.layout import FRAMES_PATH, RECEIVED_PATH
from bluestem.frames.reader import ChecksumError, FrameReader, FramesNotWritten
from bluestem.frames.repair import RepairError, RepairResult, repair_file
from bluestem.frames.verify import VerifyReport, verify_file
from bluestem.frames.writer import COMPRESSIONS, FrameWriter, WriteSummary

__all__ = [
    "COMPRESSIONS",
    "FRAMES_PATH",
    "RECEIVED_PATH",
    "ChecksumError",
    "FrameReader",
    "FrameWriter",
    "FramesNotWritten",
    "RepairError",
    "RepairResult",
    "VerifyReport",
    "WriteSummary",
    "fletcher32",
    "repair_file",
    "verify_file",
]
