"""The client side of a Merlin's two sockets: commands, and frames in blocks.

:class:`MerlinControl` sends one request at a time on the command port and turns a
reply that is not OK into a :class:`MerlinRefused` naming the command and the answer.
:class:`MerlinData` keeps the data connection: it reads an acquisition header, then
frames a block at a time into one buffer (``recv_into``), checks every message's framing
and reads its frame number with one numba kernel and decodes all its pixels with another
(:mod:`bluestem.ioc.merlin.pixels`). Blocking sockets: callers run them in a thread.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import numpy as np

from . import messages, pixels, protocol
from .headers import FrameHeader, parse_acquisition_header, parse_frame_header

__all__ = ["FrameBatch", "MerlinControl", "MerlinData", "MerlinRefused"]

#: Seconds without a byte that end a block of frames early (the frames so far are whole).
IDLE = 0.05


class MerlinRefused(RuntimeError):
    """A command the detector answered with a status other than OK."""

    def __init__(self, request: str, status: int):
        self.request, self.status = request, int(status)
        answer = protocol.STATUS_TEXT.get(self.status, "unknown status")
        super().__init__(f"Merlin refused {request}: status {self.status} ({answer})")


class MerlinControl:
    """The command port: ``get``, ``set`` and ``cmd``, each waiting for its reply."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0):
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self._sock: socket.socket | None = None

    def connect(self) -> MerlinControl:
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> MerlinControl:
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, kind: str, name: str, value=None) -> protocol.Reply:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._sock.sendall(protocol.encode_command(kind, name, value))
        reply = protocol.parse_reply(protocol.recv_message(self._sock))
        text = f"{kind} {name}" + ("" if value is None else f" {value}")
        if reply.name != name.upper() or reply.kind != kind:
            raise protocol.ProtocolError(f"reply {reply} to {text}: not its reply")
        if reply.status != protocol.Status.OK:
            raise MerlinRefused(text, reply.status)
        return reply

    def get(self, name: str) -> str:
        """The value of ``name`` as the detector sends it."""
        value = self._request("GET", name).value
        return "" if value is None else value

    def set(self, name: str, value) -> None:
        """Set ``name``; :class:`MerlinRefused` when the detector says no."""
        self._request("SET", name, protocol.format_value(value))

    def cmd(self, name: str) -> None:
        """Run a command (STARTACQUISITION, STOPACQUISITION, SOFTTRIGGER)."""
        self._request("CMD", name)


@dataclass(frozen=True)
class FrameBatch:
    """Frames read in one block: their detector numbers (from 1) and pixels."""

    numbers: np.ndarray  # int64 (n,)
    frames: np.ndarray  # (n, ky, kx)
    header: FrameHeader  # the first frame's


class MerlinData:
    """The data port: acquisition headers and frame messages.

    Parameters
    ----------
    host, port
        The detector's data port.
    timeout : float
        Seconds a read may wait for bytes (a detector that stalls longer is a
        ``TimeoutError``; the caller decides whether that is a fault).
    block_bytes : int
        Bytes of frame messages read per block.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 5.0,
                 block_bytes: int = 8 * 1024**2):  # fmt: skip
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self.block_bytes = int(block_bytes)
        self.offset = 0  # stream bytes consumed on this connection
        self._sock: socket.socket | None = None
        self._buf = np.empty(0, np.uint8)

    def connect(self) -> MerlinData:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024**2)
        self._sock, self.offset = sock, 0
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _read_into(self, view: memoryview, *, idle: float | None = None) -> int:
        """Fill ``view``; the bytes read: fewer when the peer closed, or (``idle`` s)
        when no byte came for ``idle`` s."""
        assert self._sock is not None
        got = 0
        self._sock.settimeout(idle if idle is not None else self.timeout)
        try:
            while got < len(view):
                n = self._sock.recv_into(view[got:])
                if n == 0:
                    break
                got += n
        except TimeoutError:
            if idle is None:
                raise TimeoutError(f"no data for {self.timeout} s at stream offset "
                                   f"{self.offset + got}") from None  # fmt: skip
        finally:
            self.offset += got
        return got

    def _exactly(self, n: int, what: str) -> bytes:
        buf = bytearray(n)
        start = self.offset
        if self._read_into(memoryview(buf)) < n:
            raise EOFError(f"data connection closed inside {what} at stream offset {start}")
        return bytes(buf)

    def read_acquisition_header(self) -> tuple[str, dict[str, str]]:
        """The next acquisition header: (its text verbatim, parsed)."""
        start = self.offset
        length = protocol.read_prefix(self._exactly(protocol.PREFIX_BYTES, "a prefix"), start)
        body = self._exactly(length, "the acquisition header")
        parsed = parse_acquisition_header(body)
        return body.decode("latin-1").rstrip(" \0"), parsed

    def read_frames(self, max_frames: int, first_header: FrameHeader | None = None
                    ) -> FrameBatch | None:  # fmt: skip
        """Up to ``max_frames`` frames (fewer when the connection closes on a message
        boundary; None when it closed before any).

        Raises
        ------
        bluestem.ioc.merlin.protocol.ProtocolError
            A broken message, naming its stream offset; the frames before it are lost
            only from this block's return, never written shifted.
        EOFError
            The connection closed inside a message (a truncated frame), naming the offset.
        """
        start = self.offset
        try:
            prefix = self._exactly(protocol.PREFIX_BYTES, "a frame prefix")
        except EOFError:
            if self.offset == start:
                return None
            raise
        length = protocol.read_prefix(prefix, start)
        head = self._exactly(min(length, 4096), "a frame header")
        header = parse_frame_header(head, offset=start + protocol.PREFIX_BYTES)
        depth = header.counter_depth or _depth_of(header.pixel_depth)
        raw = header.pixel_depth == "R64"
        payload = pixels.payload_bytes(depth, raw, header.chips)
        message = protocol.PREFIX_BYTES + header.header_bytes + payload
        if length != header.header_bytes + payload:
            raise protocol.ProtocolError(
                f"frame {header.number}: a body of {length} bytes, not its header "
                f"{header.header_bytes} + pixels {payload}", offset=start)  # fmt: skip
        n = max(1, min(int(max_frames), self.block_bytes // message))
        if len(self._buf) < n * message:
            self._buf = np.empty(n * message, np.uint8)
        buf = self._buf[: n * message]
        buf[: protocol.PREFIX_BYTES] = np.frombuffer(prefix, np.uint8)
        buf[protocol.PREFIX_BYTES : protocol.PREFIX_BYTES + len(head)] = np.frombuffer(
            head, np.uint8)  # fmt: skip
        done = protocol.PREFIX_BYTES + len(head)
        # The rest of the first message, then whole messages while they come at once.
        got = self._read_into(memoryview(buf[done:message]))
        if got < message - done:
            raise EOFError(f"data connection closed inside frame {header.number} (stream "
                           f"offset {start}, {done + got} of {message} bytes)")  # fmt: skip
        count = 1
        if n > 1:  # more messages while they keep coming (a pause ends the block)
            got = self._read_into(memoryview(buf[message:]), idle=IDLE)
            count += got // message
            part = got % message
            if part:  # inside a message: wait for its end as for any byte
                more = self._read_into(memoryview(buf[message * count + part :
                                                      message * (count + 1)]))  # fmt: skip
                if more < message - part:
                    where = start + count * message
                    raise EOFError(f"data connection closed inside a frame message at "
                                   f"stream offset {where} ({part + more} of {message} "
                                   "bytes)")  # fmt: skip
                count += 1
        numbers, bad, reason = messages.scan_block(buf, count, message, header.header_bytes)
        if bad >= 0:
            raise protocol.ProtocolError(f"frame message {bad} of a block: {reason}",
                                         offset=start + bad * message)  # fmt: skip
        out = np.empty((count, *pixels.frame_shape(header.chips)), pixels.output_dtype(depth))
        offsets = protocol.PREFIX_BYTES + header.header_bytes + np.arange(count) * message
        pixels.decode_block(buf, offsets.astype(np.int64), out, depth, raw, header.chips)
        return FrameBatch(numbers[:count].copy(), out, header)


def _depth_of(tag: str) -> int:
    depth = {"U01": 1, "U08": 6, "U16": 12, "U32": 24}.get(tag)
    if depth is None:  # R64 without the MQ1A extension: the depth is unknown
        raise protocol.ProtocolError(f"pixel depth {tag!r} without a counter depth (MQ1A)")
    return depth
