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
import threading
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
        self._lock = threading.Lock()  # one request and its reply at a time

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
        with self._lock:
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
        Seconds a read waits for a message's first byte before ``TimeoutError`` (the
        caller decides whether that is a fault, and may wait again).
    stall : float
        Seconds of silence inside a message that fail the read (``ConnectionError``).
    block_bytes : int
        Bytes of frame messages read per block.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 5.0, stall: float = 10.0,
                 block_bytes: int = 8 * 1024**2):  # fmt: skip
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self.stall = float(stall)
        self.block_bytes = int(block_bytes)
        self.offset = 0  # stream bytes consumed on this connection
        self._sock: socket.socket | None = None
        self._buf = np.empty(0, np.uint8)
        self._pending: BaseException | None = None  # an error after the frames returned

    def connect(self) -> MerlinData:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024**2)
        self._sock, self.offset, self._pending = sock, 0, None
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _read_into(self, view: memoryview, *, idle: float | None = None,
                   at_start: bool = False) -> int:  # fmt: skip
        """Fill ``view``; the bytes read: fewer when the peer closed, or, with ``idle``,
        when no byte came for ``idle`` s.

        Without ``idle`` a silence of ``timeout`` s is a ``TimeoutError`` only when
        ``at_start`` (a message's first byte) and nothing was read: the stream is then
        still in step and the caller may wait again. Inside a message the read waits on,
        up to ``stall`` s, then fails with ``ConnectionError`` (the stream would be out of
        step: the connection must be made again)."""
        assert self._sock is not None
        got, quiet = 0, 0.0
        self._sock.settimeout(idle if idle is not None else self.timeout)
        try:
            while got < len(view):
                try:
                    n = self._sock.recv_into(view[got:])
                except TimeoutError:
                    if idle is not None:
                        break
                    if at_start and got == 0:
                        raise TimeoutError(f"no data for {self.timeout:g} s at stream "
                                           f"offset {self.offset}") from None  # fmt: skip
                    quiet += self.timeout
                    if quiet >= self.stall:
                        raise ConnectionError(
                            f"the data stream stalled {quiet:g} s inside a message at "
                            f"stream offset {self.offset + got}") from None  # fmt: skip
                    continue
                if n == 0:
                    break
                got, quiet = got + n, 0.0
        finally:
            self.offset += got
        return got

    def _exactly(self, n: int, what: str, *, at_start: bool = False) -> bytes:
        buf = bytearray(n)
        start = self.offset
        if self._read_into(memoryview(buf), at_start=at_start) < n:
            raise EOFError(f"data connection closed inside {what} at stream offset {start}")
        return bytes(buf)

    def drain(self, idle: float = IDLE) -> int:
        """Discard what is waiting (frames of a stopped acquisition) until nothing comes
        for ``idle`` s; the bytes discarded."""
        scratch, total = memoryview(bytearray(1 << 20)), 0
        while (got := self._read_into(scratch, idle=idle)) > 0:
            total += got
            if got < len(scratch):
                break
        return total

    def read_acquisition_header(self) -> tuple[str, dict[str, str]]:
        """The next acquisition header: (its text verbatim, parsed)."""
        start = self.offset
        prefix = self._exactly(protocol.PREFIX_BYTES, "a prefix", at_start=True)
        length = protocol.read_prefix(prefix, start)
        body = self._exactly(length, "the acquisition header")
        parsed = parse_acquisition_header(body)
        return body.decode("latin-1").rstrip(" \0"), parsed

    def read_frames(self, max_frames: int, first_header: FrameHeader | None = None
                    ) -> FrameBatch | None:  # fmt: skip
        """Up to ``max_frames`` frames (fewer when they pause, or the connection closes on
        a message boundary; None when it closed before any). A block that ends in a broken
        or cut-off message returns the whole messages before it; the next call raises.

        Raises
        ------
        bluestem.ioc.merlin.protocol.ProtocolError
            A broken message, naming its stream offset; the frames before it are lost
            only from this block's return, never written shifted.
        EOFError
            The connection closed inside a message (a truncated frame), naming the offset.
        """
        if self._pending is not None:
            error, self._pending = self._pending, None
            raise error
        start = self.offset
        try:
            prefix = self._exactly(protocol.PREFIX_BYTES, "a frame prefix", at_start=True)
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
        count, error = 1, None
        if n > 1:  # more messages while they keep coming (a pause ends the block)
            got = self._read_into(memoryview(buf[message:]), idle=IDLE)
            count += got // message
            part = got % message
            if part:  # inside a message: wait for its end as for any byte
                more = self._read_into(memoryview(buf[message * count + part :
                                                      message * (count + 1)]))  # fmt: skip
                if more < message - part:
                    where = start + count * message
                    error = EOFError(f"data connection closed inside a frame message at "
                                     f"stream offset {where} ({part + more} of {message} "
                                     "bytes)")  # fmt: skip
                else:
                    count += 1
        numbers, bad, reason = messages.scan_block(buf, count, message, header.header_bytes)
        if bad >= 0:
            error = protocol.ProtocolError(f"frame message {bad} of a block: {reason}",
                                           offset=start + bad * message)  # fmt: skip
            count = bad
        if count == 0:
            raise error
        # The whole messages before a bad one are delivered; the error comes next call.
        self._pending = error
        out = np.empty((count, *pixels.frame_shape(header.chips)), pixels.output_dtype(depth))
        offsets = protocol.PREFIX_BYTES + header.header_bytes + np.arange(count) * message
        pixels.decode_block(buf, offsets.astype(np.int64), out, depth, raw, header.chips)
        return FrameBatch(numbers[:count].copy(), out, header)


def _depth_of(tag: str) -> int:
    depth = {"U01": 1, "U08": 6, "U16": 12, "U32": 24}.get(tag)
    if depth is None:  # R64 without the MQ1A extension: the depth is unknown
        raise protocol.ProtocolError(f"pixel depth {tag!r} without a counter depth (MQ1A)")
    return depth
