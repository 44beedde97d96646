"""The Merlin message framing and the command port's requests and replies.

See docs/merlin.md. Every message on either port is ``MPX,<10-digit length>,<body>``
where the length counts ``len("," + body)``. The frame headers of the data port live in
:mod:`bluestem.ioc.merlin.headers`, the parameter table in
:mod:`bluestem.ioc.merlin.parameters`.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import Any

__all__ = [
    "KINDS",
    "MAX_MESSAGE_BYTES",
    "PREFIX_BYTES",
    "STATUS_TEXT",
    "Command",
    "MessageReader",
    "ProtocolError",
    "Reply",
    "Status",
    "encode_command",
    "encode_reply",
    "format_value",
    "frame",
    "parse_command",
    "parse_reply",
    "read_prefix",
    "recv_message",
]

#: ``MPX,`` + ten digits + ``,``: what a reader takes before it knows the body's length.
PREFIX_BYTES = 15
#: The largest length field a reader accepts (docs/merlin.md): a garbled length must not
#: make a reader wait for, or allocate, gigabytes.
MAX_MESSAGE_BYTES = 2**31
_MAGIC = b"MPX,"
# Ten digits: the body may be at most this minus the comma the length also counts.
_MAX_FIELD = 9_999_999_999
#: The request kinds, in the order of docs/merlin.md.
KINDS = ("GET", "SET", "CMD")
_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
# Plain decimal notation only: float() would also take "nan", "inf" and "1_0".
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class ProtocolError(ValueError):
    """A message that breaks the framing or a header.

    Parameters
    ----------
    problem : str
        What was wrong, with the bytes seen.
    offset : int or None
        Byte offset in the stream where the bad message starts, when known.
    """

    def __init__(self, problem: str, offset: int | None = None):
        where = "at an unknown offset" if offset is None else f"at offset {offset}"
        super().__init__(f"bad Merlin message {where}: {problem}")
        self.problem = problem
        self.offset = offset

    def __reduce__(self):
        # The default would call __init__ with the composed text and prefix it twice.
        return type(self), (self.problem, self.offset)


# -- framing -----------------------------------------------------------------------------
def frame(body: bytes) -> bytes:
    """``b"MPX," + f"{len(body) + 1:010d}" + b"," + body``; ValueError when the length
    does not fit ten digits."""
    length = len(body) + 1
    if length > _MAX_FIELD:
        raise ValueError(f"a body of {len(body)} bytes does not fit the ten-digit length")
    return b"%s%010d,%s" % (_MAGIC, length, body)


def _prefix_problem(data: bytes) -> str | None:
    """What is wrong with the first up to 15 bytes of a message, judging only those given."""
    head = data[:PREFIX_BYTES]
    if head[:4] != _MAGIC[: len(head)]:
        problem = "does not start with b'MPX,'"
    elif not head[4:14].isdigit() and len(head) > 4:
        problem = "the length is not ten decimal digits"
    elif len(head) < PREFIX_BYTES:
        return None
    elif head[14:15] != b",":
        problem = "no comma after the ten-digit length"
    elif int(head[4:14]) < 1:
        problem = "length 0: it must count at least the comma after it"
    elif int(head[4:14]) > MAX_MESSAGE_BYTES:
        problem = f"length {int(head[4:14])} is over the limit of {MAX_MESSAGE_BYTES} bytes"
    else:
        return None
    return f"{problem}; got {bytes(head)!r}"


def read_prefix(prefix: bytes, offset: int | None = None) -> int:
    """The body length (the length field minus one) from the :data:`PREFIX_BYTES` bytes
    that start a message at stream ``offset``; :class:`ProtocolError` naming the offset
    and the bytes unless they are ``MPX,`` + ten digits (1 .. :data:`MAX_MESSAGE_BYTES`)
    + ``,``."""
    if len(prefix) != PREFIX_BYTES:
        raise ProtocolError(
            f"a prefix is {PREFIX_BYTES} bytes, got {len(prefix)}: {bytes(prefix)!r}", offset
        )
    problem = _prefix_problem(prefix)
    if problem is not None:
        raise ProtocolError(problem, offset)
    return int(prefix[4:14]) - 1


class MessageReader:
    """Incremental reader that cuts a byte stream into message bodies.

    Parameters
    ----------
    offset : int
        Stream offset of the first byte fed, for error messages.

    Attributes
    ----------
    offset : int
        Stream offset of the start of the next message not yet returned.
    """

    def __init__(self, offset: int = 0):
        self.offset = offset
        self._buffer = bytearray()
        self._body: int | None = None  # body length, once the prefix is in
        self._error: ProtocolError | None = None

    @property
    def pending(self) -> bytes:
        """The bytes fed that are not part of a returned body (a message begun)."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes from the stream.

        Parameters
        ----------
        data : bytes
            The next bytes of the stream, in any chunking.

        Returns
        -------
        list of bytes
            The bodies of the messages completed by these bytes, in order.

        Raises
        ------
        ProtocolError
            As soon as the bytes seen of a prefix cannot be a valid one, unless this call
            completed bodies before it: those are returned and the error is raised by the
            next call (``feed(b"")`` to have it now). The reader stays broken: a stream
            cannot be resynchronised.
        """
        if self._error is not None:
            raise self._error
        self._buffer += data
        bodies = []
        while True:
            if self._body is None:
                problem = _prefix_problem(self._buffer)
                if problem is not None:
                    self._error = ProtocolError(problem, self.offset)
                    if bodies:
                        break
                    raise self._error
                if len(self._buffer) < PREFIX_BYTES:
                    break
                self._body = int(self._buffer[4:14]) - 1
            end = PREFIX_BYTES + self._body
            if len(self._buffer) < end:
                break
            bodies.append(bytes(self._buffer[PREFIX_BYTES:end]))
            # Deleting from the front of a bytearray is cheap in CPython.
            del self._buffer[:end]
            self.offset += end
            self._body = None
        return bodies


def _recv_exactly(sock, view: memoryview) -> int:
    """Fill ``view`` from ``sock``; the number of bytes read (short only at end of stream)."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            break
        got += n
    return got


def recv_message(sock, *, offset: int | None = None) -> bytes:
    """Read exactly one message from a blocking socket.

    Parameters
    ----------
    sock : socket.socket
        A connected, blocking stream socket.
    offset : int, optional
        Stream offset of the message, for error messages.

    Returns
    -------
    bytes
        The message body.

    Raises
    ------
    EOFError
        When the peer closes before the first byte or inside the message.
    ProtocolError
        When the prefix is not a valid one.
    """
    where = "an unknown offset" if offset is None else f"offset {offset}"
    prefix = bytearray(PREFIX_BYTES)
    got = _recv_exactly(sock, memoryview(prefix))
    if got == 0:
        raise EOFError(f"connection closed before a message at {where}")
    if got < PREFIX_BYTES:
        raise EOFError(f"connection closed after {got} bytes of a message at {where}")
    size = read_prefix(bytes(prefix), offset)
    body = bytearray(size)
    got = _recv_exactly(sock, memoryview(body))
    if got < size:
        raise EOFError(
            f"connection closed after {PREFIX_BYTES + got} bytes of a message at {where}"
            f" (of {PREFIX_BYTES + size})"
        )
    return bytes(body)


# -- commands ----------------------------------------------------------------------------
class Status(IntEnum):
    """The status code that ends every reply."""

    OK = 0
    BUSY = 1
    UNKNOWN = 2
    OUT_OF_RANGE = 3


STATUS_TEXT = {
    Status.OK: "OK",
    Status.BUSY: "busy",
    Status.UNKNOWN: "unrecognised command",
    Status.OUT_OF_RANGE: "parameter out of range",
}


@dataclass(frozen=True)
class Command:
    """A request on the command port: ``kind`` is GET, SET or CMD; GET and CMD carry the
    dummy value ``"0"``."""

    kind: str
    name: str
    value: str


@dataclass(frozen=True)
class Reply:
    """A reply on the command port; ``value`` is the GET value, None for SET and CMD."""

    kind: str
    name: str
    status: Status
    value: str | None = None


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"request kind {kind!r} is not one of {', '.join(KINDS)}")


def _field_text(what: str, text: str, *, empty: bool = False) -> bytes:
    """A field as ASCII, refused when it would break the comma-separated body."""
    if (not text and not empty) or "," in text or not text.isascii() or not text.isprintable():
        raise ValueError(f"{what} {text!r} is not printable ASCII without commas")
    return text.encode("ascii")


def encode_command(kind: str, name: str, value: Any = None) -> bytes:
    """A request message, prefix included.

    Parameters
    ----------
    kind : {"GET", "SET", "CMD"}
    name : str
        The parameter or command name, upper-case ASCII letters, digits and ``_``.
    value : str, int or float, optional
        The value of a SET (required); GET and CMD take none and send the dummy ``0``.

    Returns
    -------
    bytes
        The framed message, e.g. ``b"MPX,0000000027,SET,NUMFRAMESTOACQUIRE,4096"``.

    Raises
    ------
    ValueError
        For an unknown kind, a malformed name, a missing SET value or a value given to a
        GET or CMD.
    """
    _check_kind(kind)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"command name {name!r} is not upper-case ASCII (A-Z, 0-9, _)")
    if kind == "SET":
        if value is None:
            raise ValueError(f"SET {name} needs a value")
        text = format_value(value)
    elif value is not None:
        raise ValueError(f"{kind} {name} takes no value, got {value!r}")
    else:
        text = "0"
    return frame(b"%s,%s,%s" % (kind.encode(), name.encode(), _field_text("value", text)))


def _decode(body: bytes, what: str, offset: int | None) -> str:
    try:
        return bytes(body).decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not ASCII: {bytes(body)!r}", offset) from None


def parse_command(body: bytes, *, offset: int | None = None) -> Command:
    """Parse a request body such as ``b"SET,NUMFRAMESTOACQUIRE,4096"``.

    The name is not checked against :data:`PARAMETERS`: an unknown one deserves a reply
    with status 2, not a broken connection.

    Raises
    ------
    ProtocolError
        When the body is not printable ASCII, has not three fields or its kind is unknown.
    """
    fields = _decode(body, "request", offset).split(",")
    if len(fields) != 3:
        raise ProtocolError(f"a request has 3 fields, got {len(fields)}: {body!r}", offset)
    kind, name, value = fields
    if kind not in KINDS:
        raise ProtocolError(f"unknown request kind {kind!r} in {body!r}", offset)
    if not (name + value).isprintable():
        raise ProtocolError(f"control characters in request {body!r}", offset)
    return Command(kind, name, value)


def encode_reply(kind: str, name: str, status: int, value: Any = None) -> bytes:
    """A reply message, prefix included: ``GET,NAME,value,status``, ``SET,NAME,status`` or
    ``CMD,NAME,status``.

    Parameters
    ----------
    kind : {"GET", "SET", "CMD"}
    name : str
        The name as the request spelled it (any printable ASCII without commas, so that a
        misspelt name can be answered with status 2).
    status : int or Status
    value : str, int or float, optional
        The GET value; required when the status is OK, ``0`` is sent otherwise.

    Raises
    ------
    ValueError
        For an unknown kind or status, a missing GET value or a value given to a SET or CMD.
    """
    _check_kind(kind)
    status = Status(status)
    fields = [kind.encode(), _field_text("name", name, empty=True)]
    if kind == "GET":
        if value is None and status is Status.OK:
            raise ValueError(f"a GET {name} reply with status OK needs a value")
        fields.append(_field_text("value", "0" if value is None else format_value(value)))
    elif value is not None:
        raise ValueError(f"a {kind} {name} reply carries no value, got {value!r}")
    fields.append(b"%d" % status)
    return frame(b",".join(fields))


def parse_reply(body: bytes, *, offset: int | None = None) -> Reply:
    """Parse a reply body such as ``b"GET,COUNTERDEPTH,12,0"``.

    Raises
    ------
    ProtocolError
        When the body is not ASCII, has the wrong number of fields for its kind, or the
        status is not 0 to 3.
    """
    fields = _decode(body, "reply", offset).split(",")
    kind = fields[0]
    if kind not in KINDS:
        raise ProtocolError(f"unknown reply kind {kind!r} in {body!r}", offset)
    want = 4 if kind == "GET" else 3
    if len(fields) != want:
        raise ProtocolError(
            f"a {kind} reply has {want} fields, got {len(fields)}: {body!r}", offset
        )
    code = fields[-1]
    if code not in {str(int(s)) for s in Status}:
        raise ProtocolError(f"reply status {code!r} is not one of 0 to 3 in {body!r}", offset)
    value = fields[2] if kind == "GET" else None
    return Reply(kind, fields[1], Status(int(code)), value)


def format_value(value: Any) -> str:
    """A value as the protocol spells it.

    Integers in decimal, floats in the shortest text that reads back the same without an
    exponent (``1.5``, ``0.001``), strings as they are.

    Raises
    ------
    ValueError
        For a float that is not finite.
    TypeError
        For anything else.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be sent as a Merlin value")
        text = repr(value)
        # A Merlin reads plain decimals; repr switches to exponents outside 1e-4 ... 1e16.
        return format(Decimal(text), "f") if "e" in text else text
    raise TypeError(f"cannot send {value!r} ({type(value).__name__}) as a Merlin value")
