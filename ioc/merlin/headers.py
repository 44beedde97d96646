"""The data port's headers: the acquisition header (HDR) and the per-frame MQ1 header.

See docs/merlin.md. Both are ASCII text padded to a fixed size; the functions here
compose and parse the *bodies* (:func:`bluestem.ioc.merlin.protocol.frame` adds the
``MPX`` prefix).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .parameters import PARAMETERS
from .protocol import ProtocolError, format_value

__all__ = [
    "FrameHeader",
    "compose_acquisition_header",
    "compose_frame_header",
    "default_acquisition_header",
    "make_frame_header",
    "parse_acquisition_header",
    "parse_frame_header",
]

_HDR = b"HDR,"
_PADDING = " \0"
_TRIGGER_START = "Trigger Start (Positive, Negative, Internal)"
_TRIGGER_STOP = "Trigger Stop (Positive, Negative, Internal)"
# The key lists the words its value may take: read them from it, so each is spelled once.
_POSITIVE, _NEGATIVE, _INTERNAL = _TRIGGER_START[_TRIGGER_START.index("(") + 1 : -1].split(", ")
# TRIGGERSTART/STOP codes: a soft trigger comes from the detector's own software.
_TRIGGER_WORDS = (_INTERNAL, _POSITIVE, _NEGATIVE, _POSITIVE, _NEGATIVE, _INTERNAL)
_CHIP_IDS = ("W529_F5", "W529_E5", "W529_D5", "W529_C5")
# One chip's 27 DACs (3RX), typical values of a Merlin configured for 120 keV.
_DACS = (175, 511, 0, 0, 0, 0, 0, 0, 125, 255, 125, 125, 100, 100, 82, 100, 87, 30, 128, 4)
_DACS += (255, 129, 128, 176, 168, 511, 511)
_BINARY_DEPTHS = {1: "U01", 6: "U08", 12: "U16", 24: "U32"}
_PIXEL_DEPTHS = (*_BINARY_DEPTHS.values(), "R64")
_HEADER_BYTES = {1: 384, 4: 768}
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


# -- acquisition header ------------------------------------------------------------------
def _line_text(what: str, text: str) -> str:
    if not text.isascii() or "\n" in text or "\r" in text or ":\t" in text:
        raise ValueError(f"acquisition header {what} {text!r} is not one line of ASCII")
    return text


def compose_acquisition_header(fields: Mapping[str, Any], size: int = 2048) -> bytes:
    """The body of an acquisition header.

    Parameters
    ----------
    fields : mapping of str to str
        Keys (without the colon) and values, in order; non-string values are written
        with :func:`~bluestem.ioc.merlin.protocol.format_value`.
    size : int
        Length of the body, padding included.

    Returns
    -------
    bytes
        ``b"HDR,\\t\\n"``, a line ``Key:\\tvalue\\n`` per field, ``End\\t``, padded with
        spaces to exactly ``size`` bytes.

    Raises
    ------
    ValueError
        When a key or value is not one line of ASCII, a key is ``End``, or the text does
        not fit ``size``.
    """
    lines = ["HDR,\t\n"]
    for key, value in fields.items():
        if key.strip() == "End":
            raise ValueError("'End' is the acquisition header's last line, not a key")
        lines.append(f"{_line_text('key', key)}:\t{_line_text('value', format_value(value))}\n")
    lines.append("End\t")
    text = "".join(lines).encode("ascii")
    if len(text) > size:
        raise ValueError(f"the acquisition header takes {len(text)} bytes, more than {size}")
    return text.ljust(size, b" ")


def parse_acquisition_header(body: bytes, *, offset: int | None = None) -> dict[str, str]:
    """The fields of an acquisition header body.

    Accepts ``\\r\\n`` line ends and padding of spaces or NULs after ``End``.

    Returns
    -------
    dict of str to str
        Keys without the trailing colon, values without surrounding white space.

    Raises
    ------
    ProtocolError
        When the body does not start with ``HDR,``, a line has no colon or there is no
        ``End`` line.
    """
    body = bytes(body)
    if not body.startswith(_HDR):
        raise ProtocolError(
            f"an acquisition header starts with b'HDR,', got {body[:16]!r}", offset
        )
    # latin-1 decodes any byte: a stray one in a value must not hide the other fields.
    text = body[len(_HDR) :].decode("latin-1").rstrip(_PADDING).replace("\r\n", "\n")
    fields: dict[str, str] = {}
    for number, line in enumerate(text.split("\n")):
        line = line.strip()
        if not line:
            continue
        if line == "End":
            return fields
        # Values hold colons of their own (times), so split at the first ":\t" if any.
        key, colon, value = line.partition(":\t") if ":\t" in line else line.partition(":")
        if not colon:
            raise ProtocolError(f"acquisition header line {number} has no colon: {line!r}", offset)
        fields[key.strip()] = value.strip()
    raise ProtocolError("the acquisition header has no End line", offset)


def _chip_count(chips: int) -> int:
    if chips not in _HEADER_BYTES:
        raise ValueError(f"a Merlin has 1 or 4 chips, not {chips!r}")
    return chips


def _scientific(value: float) -> str:
    """``%.6E`` with the exponent unpadded, as a Merlin writes it (``1.200000E+2``)."""
    mantissa, exponent = f"{value:.6E}".split("E")
    return f"{mantissa}E{int(exponent):+d}"


def default_acquisition_header(
    settings: Mapping[str, Any], *, chips: int, when: datetime
) -> dict[str, str]:
    """The simulator's acquisition header fields (the keys of docs/merlin.md, in order)
    from the detector's ``settings`` (parameter name to typed value; a missing name takes
    its default), for ``chips`` 1 or 4, started at ``when`` (naive: local time)."""
    quad = _chip_count(chips) == 4

    def get(name: str) -> Any:
        return settings.get(name, PARAMETERS[name].default)

    def trigger(name: str) -> str:
        code = get(name)
        if code not in range(len(_TRIGGER_WORDS)):
            raise ValueError(f"{name} {code!r} is not a trigger code 0 to 5")
        return _TRIGGER_WORDS[code]

    ids = _CHIP_IDS[:chips] + ("-",) * (len(_CHIP_IDS) - chips)
    thresholds = [float(get(f"THRESHOLD{n}")) for n in range(8)]
    local = when.astimezone() if when.tzinfo is not None else when
    config = f"c:\\MERLIN_Quad_Config\\{ids[0]}\\{ids[0]}"
    return {
        "Time and Date Stamp (day, mnth, yr, hr, min, s)": f"{local:%d/%m/%Y %H:%M:%S}",
        "Chip ID": ",".join(ids),
        "Chip Type (Medipix 3.0, Medipix 3.1, Medipix 3RX)": "Medipix 3RX",
        "Assembly Size (NX1, 2X2)": "2x2" if quad else "1x1",
        "Chip Mode  (SPM, CSM, CM, CSCM)": "SPM",
        "Counter Depth (number)": format_value(get("COUNTERDEPTH")),
        "Gain": "SLGM",
        "Active Counters": "Counter 0",
        "Thresholds (keV)": ",".join(_scientific(t) for t in thresholds),
        "DACs": "; ".join([",".join(f"{d:03d}" for d in _DACS)] * chips),
        "bpc File": f"{config}_SPM.bpc",
        "DAC File": f"{config}_SPM.dacs",
        "Gap Fill Mode": "None",
        "Flat Field File": "None",
        "Dead Time File": "None",
        "Acquisition Type (Normal, Th_scan, Config)": "Normal",
        "Frames in Acquisition (Number)": format_value(get("NUMFRAMESTOACQUIRE")),
        "Frames per Trigger (Number)": format_value(get("NUMFRAMESPERTRIGGER")),
        _TRIGGER_START: trigger("TRIGGERSTART"),
        _TRIGGER_STOP: trigger("TRIGGERSTOP"),
        "Sensor Bias (V)": "120 V",
        "Sensor Polarity (Positive, Negative)": _POSITIVE,
        "Temperature (C)": "Board Temp 37.4 Deg C",
        "Humidity (%)": "Board Humidity 1.3",
        "Medipix Clock (MHz)": "120MHz",
        "Readout System": "Merlin Quad" if quad else "Merlin",
        "Software Version": format_value(get("SOFTWAREVERSION")),
    }


# -- MQ1 frame header --------------------------------------------------------------------
@dataclass(frozen=True)
class FrameHeader:
    """The fields of an MQ1 frame header (docs/merlin.md).

    ``layout`` is as sent, right-justified to 6 characters (``"   1x1"``); ``thresholds``
    holds 8 values (keV); ``dacs`` 27 per chip. The last three fields are those of the
    ``MQ1A`` extension, None when a header has none.
    """

    number: int
    header_bytes: int
    chips: int
    x: int
    y: int
    pixel_depth: str
    layout: str
    chip_select: int
    timestamp: str
    shutter_s: float
    counter: int
    colour: int
    gain: int
    thresholds: tuple[float, ...]
    dac_format: str
    dacs: tuple[int, ...]
    ext_timestamp: str | None = None
    shutter_ns: int | None = None
    counter_depth: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (tuples as lists)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["thresholds"] = list(self.thresholds)
        out["dacs"] = list(self.dacs)
        return out


def _digits(name: str, value: int, width: int, *, grow: bool = False, base: str = "d") -> str:
    try:
        number = operator.index(value)  # numpy integers too, not floats
    except TypeError:
        number = -1
    text = f"{number:0{width}{base}}" if number >= 0 else ""
    if not text or (len(text) > width and not grow):
        raise ValueError(f"MQ1 {name} {value!r} does not fit {width} digits")
    return text


def _word(name: str, text: str) -> str:
    if not text or "," in text or not text.isascii():
        raise ValueError(f"MQ1 {name} {text!r} is not ASCII without commas")
    return text


def compose_frame_header(h: FrameHeader) -> bytes:
    """The MQ1 header of a frame, exactly ``h.header_bytes`` long.

    Raises
    ------
    ValueError
        When a field does not fit its width, there are not 8 thresholds, the extension
        is given in part, or the text does not fit ``h.header_bytes``.
    """
    if len(h.thresholds) != 8 or not all(map(math.isfinite, h.thresholds)):
        raise ValueError(f"an MQ1 header has 8 finite thresholds, got {h.thresholds}")
    if not (math.isfinite(h.shutter_s) and h.shutter_s >= 0):
        raise ValueError(f"MQ1 shutter time {h.shutter_s!r} is not a time in seconds")
    fields = ["MQ1", _digits("frame number", h.number, 6, grow=True)]
    fields += [_digits("header size", h.header_bytes, 5), _digits("chips", h.chips, 2)]
    fields += [_digits("X", h.x, 4), _digits("Y", h.y, 4), _word("pixel depth", h.pixel_depth)]
    fields += [
        _word("layout", h.layout.rjust(6)),
        _digits("chip select", h.chip_select, 2, base="X"),
    ]
    fields += [_word("time stamp", h.timestamp), f"{h.shutter_s:.6f}"]
    fields += [_digits(n, v, 1) for n, v in [("counter", h.counter), ("colour", h.colour)]]
    fields += [_digits("gain", h.gain, 1), *map(_scientific, h.thresholds)]
    fields += [_word("DAC format", h.dac_format), *(_digits("DAC", d, 3) for d in h.dacs)]
    extension = (h.ext_timestamp, h.shutter_ns, h.counter_depth)
    if any(v is not None for v in extension):
        if any(v is None for v in extension):
            raise ValueError(f"the MQ1A extension needs all of its three fields, got {extension}")
        fields += ["MQ1A", _word("UTC time stamp", h.ext_timestamp)]
        fields += [_digits("shutter (ns)", h.shutter_ns, 1, grow=True) + "ns"]
        fields += [_digits("counter depth", h.counter_depth, 1, grow=True)]
    text = ",".join(fields).encode("ascii")
    if len(text) > h.header_bytes:
        raise ValueError(f"the MQ1 fields take {len(text)} bytes, more than {h.header_bytes}")
    return text.ljust(h.header_bytes, b" ")


class _Fields:
    """The fields of one header, read in order; errors name the field and its index."""

    def __init__(self, fields: list[str], offset: int | None):
        self.fields = fields
        self.offset = offset
        self.index = 0

    def error(self, index: int, name: str, problem: str) -> ProtocolError:
        return ProtocolError(f"MQ1 frame header field {index} ({name}) {problem}", self.offset)

    def text(self, name: str) -> str:
        if self.index >= len(self.fields):
            raise self.error(self.index, name, "is missing: the header ends before it")
        self.index += 1
        value = self.fields[self.index - 1]
        if not value.strip():
            raise self.error(self.index - 1, name, "is empty")
        return value

    def integer(self, name: str, base: int = 10, suffix: str = "") -> int:
        value = self.text(name)
        digits = value.removesuffix(suffix) if value.endswith(suffix) else ""
        try:
            if digits.isascii() and digits.isalnum():
                return int(digits, base)
        except ValueError:
            pass
        kind = "a hexadecimal" if base == 16 else "a decimal"
        after = f" followed by {suffix!r}" if suffix else ""
        raise self.error(self.index - 1, name, f"is not {kind} integer{after}: {value!r}")

    def real(self, name: str) -> float:
        value = self.text(name)
        if not _FLOAT.fullmatch(value):
            raise self.error(self.index - 1, name, f"is not a number: {value!r}")
        return float(value)


def parse_frame_header(data: bytes, *, offset: int | None = None) -> FrameHeader:
    """Parse an MQ1 frame header.

    Parameters
    ----------
    data : bytes
        The header, or a whole frame body (what follows the header is ignored); padding
        of spaces or NULs is accepted.
    offset : int, optional
        Stream offset of the message, for error messages.

    Raises
    ------
    ProtocolError
        Naming the field (index and name) that is missing or malformed, or when ``data``
        is shorter than the header size it gives.
    """
    head = _Fields(bytes(data[:64]).decode("latin-1").split(",", 3)[:3], offset)
    if head.text("tag") != "MQ1":
        raise head.error(0, "tag", f"is not 'MQ1': {bytes(data[:16])!r}")
    head.integer("frame number")
    size = head.integer("header size")
    if len(data) < size:
        raise ProtocolError(f"MQ1 header size {size}, but only {len(data)} bytes", offset)
    text = bytes(data[:size]).decode("latin-1").rstrip(_PADDING)
    f = _Fields(text.removesuffix(",").split(","), offset)
    f.index = 1  # the tag, checked above
    number = f.integer("frame number")
    header_bytes = f.integer("header size")
    chips = f.integer("chips")
    x, y = f.integer("X"), f.integer("Y")
    pixel_depth = f.text("pixel depth")
    if pixel_depth not in _PIXEL_DEPTHS:
        raise f.error(
            6, "pixel depth", f"{pixel_depth!r} is not one of {', '.join(_PIXEL_DEPTHS)}"
        )
    layout, chip_select = f.text("layout"), f.integer("chip select", base=16)
    timestamp, shutter_s = f.text("time stamp"), f.real("shutter (s)")
    counter, colour, gain = f.integer("counter"), f.integer("colour"), f.integer("gain")
    thresholds = tuple(f.real(f"threshold {n}") for n in range(8))
    dac_format = f.text("DAC format")
    dacs = []
    while f.index < len(f.fields) and f.fields[f.index] != "MQ1A":
        dacs.append(f.integer(f"DAC {len(dacs)}"))
    extension: tuple[Any, ...] = (None, None, None)
    if f.index < len(f.fields):
        f.index += 1
        extension = (f.text("UTC time stamp"), f.integer("shutter (ns)", suffix="ns"))
        extension += (f.integer("counter depth"),)
    return FrameHeader(
        number, header_bytes, chips, x, y, pixel_depth, layout, chip_select, timestamp,
        shutter_s, counter, colour, gain, thresholds, dac_format, tuple(dacs), *extension,
    )  # fmt: skip


def make_frame_header(
    number: int,
    *,
    chips: int,
    depth: int,
    raw: bool,
    shutter_s: float,
    thresholds: Sequence[float],
    when: datetime,
    counter: int = 0,
    colour: int = 0,
    gain: int = 0,
) -> FrameHeader:
    """The header of frame ``number`` as the simulator sends it.

    Parameters
    ----------
    number : int
        Frame number, from 1.
    chips : {1, 4}
    depth : {1, 6, 12, 24}
        Counter depth (bits).
    raw : bool
        Raw (``R64``) rather than binary pixels.
    shutter_s : float
        Shutter open time (s).
    thresholds : sequence of float
        Up to 8 thresholds (keV); the rest are 0.
    when : datetime
        When the frame was taken (naive: local time).
    counter, colour, gain : int

    Returns
    -------
    FrameHeader
        With the ``MQ1A`` extension.
    """
    quad = _chip_count(chips) == 4
    if depth not in _BINARY_DEPTHS:
        raise ValueError(f"counter depth {depth!r} is not one of 1, 6, 12, 24")
    if len(thresholds) > 8:
        raise ValueError(f"a Merlin has 8 thresholds, got {len(thresholds)}")
    # A binary quad frame arrives assembled; a raw one as its four chips side by side.
    x, y = (1024, 256) if quad and raw else (512, 512) if quad else (256, 256)
    local = when.astimezone() if when.tzinfo is not None else when
    utc = when.astimezone(UTC)
    return FrameHeader(
        number=number,
        header_bytes=_HEADER_BYTES[chips],
        chips=chips,
        x=x,
        y=y,
        pixel_depth="R64" if raw else _BINARY_DEPTHS[depth],
        layout="   2x2" if quad else "   1x1",
        chip_select=0x0F if quad else 0x01,
        timestamp=f"{local:%Y-%m-%d %H:%M:%S.%f}",
        shutter_s=float(shutter_s),
        counter=counter,
        colour=colour,
        gain=gain,
        thresholds=tuple(float(t) for t in thresholds) + (0.0,) * (8 - len(thresholds)),
        dac_format="3RX",
        dacs=_DACS * chips,
        # A datetime holds microseconds; the nanosecond digits a Merlin adds are zero here.
        ext_timestamp=f"{utc:%Y-%m-%dT%H:%M:%S.%f}000Z",
        shutter_ns=round(shutter_s * 1e9),
        counter_depth=depth,
    )
