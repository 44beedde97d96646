"""The HDF5 superblock of a raw-frame file whose writer died, and its repair.

A SWMR writer sets the superblock's file-consistency (status) flags when it starts and
clears them when it closes the file. When it is killed they stay set, and HDF5 refuses
to open the file without SWMR ("file is already open for write"). The stored
end-of-file address is not updated while a SWMR writer appends either, and HDF5 reading
without SWMR refuses every byte past it ("addr overflow"). :func:`repair_file`
rewrites only the superblock (flags cleared, end-of-file address set to the file's
length, checksum recomputed): this is ``h5clear -s --increment=0``, which is not
installed here. The layout is that of superblock versions 2 and 3 in the HDF5 file
format specification. See docs/data-layout.md, "A file whose writer died".
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from dataclasses import asdict, dataclass, field

__all__ = [
    "RepairError",
    "RepairResult",
    "Superblock",
    "lookup3",
    "open_writers",
    "read_superblock",
    "repair_file",
]

SIGNATURE = b"\x89HDF\r\n\x1a\n"
WRITE_ACCESS = 0x01  # H5F_SUPER_WRITE_ACCESS
SWMR_WRITE_ACCESS = 0x04  # H5F_SUPER_SWMR_WRITE_ACCESS
_M32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, as HDF5's ``H5_checksum_lookup3``.

    Parameters
    ----------
    data : bytes
        The bytes to hash (a superblock is 44 of them: pure Python is fast enough).
    initval : int
        Seed; HDF5 checksums its metadata with 0.

    Returns
    -------
    int
        The 32-bit hash.
    """
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _M32
    pos = 0
    while length - pos > 12:
        x, y, z = struct.unpack_from("<3I", data, pos)
        a, b, c = (a + x) & _M32, (b + y) & _M32, (c + z) & _M32
        a = ((a - c) & _M32) ^ _rot(c, 4)
        c = (c + b) & _M32
        b = ((b - a) & _M32) ^ _rot(a, 6)
        a = (a + c) & _M32
        c = ((c - b) & _M32) ^ _rot(b, 8)
        b = (b + a) & _M32
        a = ((a - c) & _M32) ^ _rot(c, 16)
        c = (c + b) & _M32
        b = ((b - a) & _M32) ^ _rot(a, 19)
        a = (a + c) & _M32
        c = ((c - b) & _M32) ^ _rot(b, 4)
        b = (b + a) & _M32
        pos += 12
    if length == pos:  # only for empty input: lookup3 returns c unmixed
        return c
    # The last 1..12 bytes, zero-padded, are exactly lookup3's byte-wise tail switch.
    x, y, z = struct.unpack("<3I", bytes(data[pos:]).ljust(12, b"\0"))
    a, b, c = (a + x) & _M32, (b + y) & _M32, (c + z) & _M32
    c = ((c ^ b) - _rot(b, 14)) & _M32
    a = ((a ^ c) - _rot(c, 11)) & _M32
    b = ((b ^ a) - _rot(a, 25)) & _M32
    c = ((c ^ b) - _rot(b, 16)) & _M32
    a = ((a ^ c) - _rot(c, 4)) & _M32
    b = ((b ^ a) - _rot(a, 14)) & _M32
    c = ((c ^ b) - _rot(b, 24)) & _M32
    return c


@dataclass(frozen=True)
class Superblock:
    """A version 2 or 3 superblock as stored (addresses are absolute file offsets).

    ``offset`` is where it starts in the file (0 unless there is a user block);
    ``extension_address`` is None when the file has no superblock extension;
    ``checksum`` is the stored lookup3, ``computed`` the one of the stored bytes.
    """

    offset: int
    version: int
    offset_size: int
    length_size: int
    flags: int
    base_address: int
    extension_address: int | None
    eof_address: int
    root_address: int
    checksum: int
    computed: int
    raw: bytes = field(repr=False)

    @property
    def checksum_ok(self) -> bool:
        """Whether the stored checksum matches the stored bytes."""
        return self.checksum == self.computed

    @property
    def unclosed(self) -> bool:
        """Whether a writer opened the file and never closed it (status flags set)."""
        return self.flags != 0

    @property
    def swmr(self) -> bool:
        """Whether the writer that left the flags set was a SWMR writer."""
        return self.flags == WRITE_ACCESS | SWMR_WRITE_ACCESS

    def rewritten(self, *, flags: int, eof_address: int) -> bytes:
        """The superblock bytes with new flags and end-of-file address, checksum redone."""
        n = self.offset_size
        body = bytearray(self.raw[:-4])
        body[11] = flags
        at = 12 + 2 * n
        body[at : at + n] = eof_address.to_bytes(n, "little")
        return bytes(body) + struct.pack("<I", lookup3(bytes(body)))


def _superblock_at(fh, offset: int) -> bytes | None:
    fh.seek(offset)
    head = fh.read(12)
    return head if len(head) == 12 and head[:8] == SIGNATURE else None


def read_superblock(path: str | os.PathLike) -> Superblock:
    """Read and decode the superblock of an HDF5 file (versions 2 and 3).

    HDF5 looks for the signature at 0, 512, 1024, 2048, ... (after a user block); so
    does this.

    Raises
    ------
    ValueError
        No HDF5 signature, or a superblock version other than 2 or 3 (``libver=
        "latest"``, as :class:`~bluestem.frames.FrameWriter` writes it).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        offset, head = 0, _superblock_at(fh, 0)
        while head is None and offset * 2 + 12 <= size:
            offset = max(512, offset * 2)
            head = _superblock_at(fh, offset)
        if head is None:
            raise ValueError(f"{path} is not an HDF5 file: no superblock signature found")
        version, n = head[8], head[9]
        if version not in (2, 3):
            raise ValueError(
                f"{path}: superblock version {version} is not supported: allowed 2 or 3 "
                '(files created with libver="latest")'
            )
        if n not in (2, 4, 8):
            raise ValueError(f"{path}: size of offsets {n} is not one of 2, 4, 8")
        nbytes = 12 + 4 * n + 4
        fh.seek(offset)
        raw = fh.read(nbytes)
    if len(raw) != nbytes:
        raise ValueError(f"{path}: superblock cut short ({len(raw)} of {nbytes} bytes)")
    base, ext, eof, root = (
        int.from_bytes(raw[12 + i * n : 12 + (i + 1) * n], "little") for i in range(4)
    )
    return Superblock(
        offset=offset,
        version=version,
        offset_size=n,
        length_size=head[10],
        flags=head[11],
        base_address=base,
        extension_address=None if ext == (1 << (8 * n)) - 1 else ext,
        eof_address=eof,
        root_address=root,
        checksum=struct.unpack("<I", raw[-4:])[0],
        computed=lookup3(raw[:-4]),
        raw=raw,
    )


def open_writers(path: str | os.PathLike) -> list[str] | None:
    """Processes on this host that hold ``path`` open for writing, as ``"PID (name)"``.

    A SWMR writer holds no file lock once SWMR writing starts (measured: /proc/locks
    is empty for a running or stopped one), so an exclusive-lock probe cannot see it;
    its open file descriptor can. Processes of other users cannot be inspected unless
    running as root, nor can processes on other hosts (a network file system).

    Returns
    -------
    list of str or None
        None where there is no /proc to look in (not Linux).
    """
    if not os.path.isdir("/proc/self/fd"):
        return None
    target = os.stat(path)
    key = (target.st_dev, target.st_ino)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:  # another user's process, or it just exited
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{entry.name}/fd/{fd}")
                if (st.st_dev, st.st_ino) != key:
                    continue
                with open(f"/proc/{entry.name}/fdinfo/{fd}") as info:
                    flags = next(int(v.split()[1], 8) for v in info if v.startswith("flags:"))
            except (OSError, StopIteration, ValueError):
                continue
            if (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR):
                try:
                    with open(f"/proc/{entry.name}/comm") as comm:
                        name = comm.read().strip()
                except OSError:
                    name = "?"
                found.append(f"{entry.name} ({name})")
                break
    return found


class RepairError(RuntimeError):
    """:func:`repair_file` refused: the message says why; the file is unchanged."""


@dataclass
class RepairResult:
    """What :func:`repair_file` did: ``repaired`` False means nothing needed doing."""

    path: str
    repaired: bool
    actions: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per action."""
        head = "repaired" if self.repaired else "nothing to repair"
        return "\n".join([f"{self.path}: {head}", *(f"  {a}" for a in self.actions)])

    def as_dict(self) -> dict:
        """The result as a JSON-ready dict."""
        return asdict(self)


def _check_repairable(path: str, sb: Superblock, size: int) -> None:
    if not sb.checksum_ok:
        raise RepairError(
            f"{path}: superblock checksum mismatch (stored {sb.checksum:#010x}, computed "
            f"{sb.computed:#010x}): not editing a superblock that does not check out"
        )
    if size < sb.eof_address:
        raise RepairError(
            f"{path}: truncated: the file is {size} bytes, {sb.eof_address - size} fewer "
            f"than the end-of-file address {sb.eof_address} in its superblock; what is "
            "missing cannot be repaired (`bluestem verify` still reads what is there)"
        )
    if sb.unclosed and not sb.swmr:
        raise RepairError(
            f"{path}: status flags {sb.flags:#04x} are not those of a SWMR writer (0x05): "
            "a writer without SWMR may never have flushed its metadata, so clearing them "
            "could expose an inconsistent file; only SWMR files are repaired"
        )


def _rewrite(path: str, sb: Superblock, size: int) -> bytes:
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            # A writer without SWMR holds an exclusive lock; holding a shared one while
            # the superblock is rewritten also keeps any HDF5 writer from opening it now.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RepairError(f"{path}: another process holds an HDF5 write lock on it") from None
        if os.pread(fd, len(sb.raw), sb.offset) != sb.raw:
            raise RepairError(f"{path}: the superblock changed while it was checked: a writer?")
        new = sb.rewritten(flags=0, eof_address=size)
        os.pwrite(fd, new, sb.offset)
        os.fsync(fd)
    finally:
        os.close(fd)  # also releases the lock
    return new


def repair_file(path: str | os.PathLike) -> RepairResult:
    """Make a raw-frame file whose SWMR writer died readable without SWMR.

    Clears the superblock's status flags, sets its end-of-file address to the file's
    length (the SWMR writer left it where it was when writing began) and recomputes its
    checksum; no other byte changes. The file is then made read-only (0o444), as the
    writer does on a clean close.

    Parameters
    ----------
    path : str or os.PathLike
        An HDF5 file with a version 2 or 3 superblock.

    Returns
    -------
    RepairResult
        ``repaired`` False (nothing touched) for a file closed by its writer.

    Raises
    ------
    RepairError
        Refused, the file unchanged: a process on this host still has it open for
        writing (or holds an HDF5 write lock on it), the file is shorter than its
        superblock says (truncated), the flags are not a SWMR writer's, or the stored
        superblock checksum is wrong.
    ValueError
        Not an HDF5 file or an unsupported superblock version.
    """
    path = str(path)
    sb = read_superblock(path)
    size = os.path.getsize(path)
    _check_repairable(path, sb, size)
    if not sb.unclosed:
        return RepairResult(
            path, False, ["closed by its writer: superblock status flags are already 0x00"]
        )
    writers = open_writers(path)
    if writers is None:
        raise RepairError(f"{path}: cannot tell whether a process still writes it (no /proc)")
    if writers:
        raise RepairError(
            f"{path}: still open for writing by process {', '.join(writers)}: its writer is "
            "alive (running or stopped); stop that process before --repair"
        )
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if not os.access(path, os.W_OK):
        os.chmod(path, mode | stat.S_IWUSR)  # ours to change: it ends up 0o444 anyway
    try:
        new = _rewrite(path, sb, size)
    except BaseException:
        os.chmod(path, mode)  # refused: leave the file exactly as it was
        raise
    os.chmod(path, 0o444)
    after = read_superblock(path)
    actions = [
        f"superblock status flags {sb.flags:#04x} -> {after.flags:#04x} "
        "(a SWMR writer that never closed the file)",
        f"end-of-file address {sb.eof_address} -> {after.eof_address} (the file's length)"
        if after.eof_address != sb.eof_address
        else f"end-of-file address {sb.eof_address} unchanged (the file's length)",
        f"superblock checksum {sb.checksum:#010x} -> {after.checksum:#010x}; "
        f"bytes {sb.offset}..{sb.offset + len(new) - 1} rewritten, no other byte changed",
        f"mode {mode:#o} -> 0o444",
    ]
    return RepairResult(path, True, actions)
