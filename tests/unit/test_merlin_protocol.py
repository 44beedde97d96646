"""The Merlin protocol (docs/merlin.md): framing, commands, parameters and headers.

Expected bytes are written out by hand here, with their length arithmetic, rather than
computed by the code under test.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from bluestem.ioc.merlin.headers import (
    FrameHeader,
    compose_acquisition_header,
    compose_frame_header,
    default_acquisition_header,
    make_frame_header,
    parse_acquisition_header,
    parse_frame_header,
)
from bluestem.ioc.merlin.parameters import PARAMETERS, check_value
from bluestem.ioc.merlin.protocol import (
    PREFIX_BYTES,
    STATUS_TEXT,
    Command,
    MessageReader,
    ProtocolError,
    Reply,
    Status,
    encode_command,
    encode_reply,
    format_value,
    frame,
    parse_command,
    parse_reply,
    read_prefix,
    recv_message,
)

SET_FRAMES = b"MPX,0000000028,SET,NUMFRAMESTOACQUIRE,4096"


# -- framing -----------------------------------------------------------------------------
def test_the_length_counts_the_comma_and_the_body():
    # 1 comma + 3 "SET" + 1 + 18 "NUMFRAMESTOACQUIRE" + 1 + 4 "4096" = 28. (The example of
    # docs/merlin.md says 27: that is len(body), without the comma its own rule counts.)
    assert len(",SET,NUMFRAMESTOACQUIRE,4096") == 28
    assert frame(b"SET,NUMFRAMESTOACQUIRE,4096") == SET_FRAMES
    assert encode_command("SET", "NUMFRAMESTOACQUIRE", 4096) == SET_FRAMES
    assert read_prefix(SET_FRAMES[:15]) == 27
    assert PREFIX_BYTES == 15


def test_an_empty_body_has_length_one():
    assert frame(b"") == b"MPX,0000000001,"
    assert read_prefix(b"MPX,0000000001,") == 0


def test_frame_refuses_a_body_longer_than_ten_digits():
    class Huge(bytes):
        def __len__(self):
            return 9_999_999_999  # + the comma: 11 digits

    with pytest.raises(ValueError, match="ten-digit"):
        frame(Huge())


@pytest.mark.parametrize(
    "prefix, why",
    [
        (b"MPQ,0000000028,", "does not start with b'MPX,'"),
        (b"mpx,0000000028,", "does not start with b'MPX,'"),
        (b"MPX,00000000x8,", "not ten decimal digits"),
        (b"MPX, 000000028,", "not ten decimal digits"),  # int() would take the space
        (b"MPX,-000000028,", "not ten decimal digits"),
        (b"MPX,0000000028;", "no comma"),
        (b"MPX,0000000000,", "length 0"),
        (b"MPX,9999999999,", "over the limit"),
        (b"MPX,00000", "a prefix is 15 bytes, got 9"),
    ],
)
def test_read_prefix_refuses_naming_the_offset_and_the_bytes(prefix, why):
    with pytest.raises(ProtocolError) as info:
        read_prefix(prefix, offset=1234)
    text = str(info.value)
    assert info.value.offset == 1234
    assert "offset 1234" in text
    assert why in text
    assert repr(prefix) in text


def test_a_protocol_error_without_an_offset_says_so():
    with pytest.raises(ProtocolError, match="unknown offset") as info:
        read_prefix(b"XXXXXXXXXXXXXXX")
    assert info.value.offset is None
    assert isinstance(info.value, ValueError)


# Three messages, hand-built: 15 + 27, 15 + 0 and 15 + 21 bytes.
STREAM = (
    b"MPX,0000000028,SET,NUMFRAMESTOACQUIRE,4096"
    b"MPX,0000000001,"
    b"MPX,0000000022,GET,COUNTERDEPTH,12,0"
)
BODIES = [b"SET,NUMFRAMESTOACQUIRE,4096", b"", b"GET,COUNTERDEPTH,12,0"]
STARTS = [0, 42, 57]  # where each message starts
END = 93


def test_the_stream_is_what_it_claims():
    assert len(b",GET,COUNTERDEPTH,12,0") == 22  # 1 + 3 + 1 + 12 + 1 + 2 + 1 + 1
    assert len(STREAM) == END


def _chunks(data: bytes, sizes):
    i, k = 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        yield data[i : i + n]
        i, k = i + n, k + 1


@pytest.mark.parametrize("sizes", [[len(STREAM)], [1], [2], [3, 5, 7, 11], [14, 1, 16], [41]])
def test_message_reader_gives_the_same_bodies_in_any_chunking(sizes):
    reader = MessageReader()
    got, offsets = [], []
    for chunk in _chunks(STREAM, sizes):
        for body in reader.feed(chunk):
            got.append(body)
            offsets.append(reader.offset)
    assert got == BODIES
    # After the last body of a chunk the offset is the next message's start.
    assert reader.offset == END
    assert reader.pending == b""
    assert set(offsets) <= {*STARTS[1:], END}


def test_message_reader_keeps_a_partial_message_pending():
    reader = MessageReader(offset=1000)
    assert reader.feed(STREAM[:50]) == [BODIES[0]]
    assert reader.offset == 1042
    assert reader.pending == STREAM[42:50]
    assert reader.feed(STREAM[50:]) == BODIES[1:]
    assert reader.offset == 1000 + END


@pytest.mark.parametrize("sizes", [[1], [4], [len(STREAM) + 15]])
@pytest.mark.parametrize(
    "bad, why",
    [
        (b"MPQ,0000000005,HELLO", "b'MPX,'"),
        (b"MPX,00000x0005,HELLO", "ten decimal digits"),
        (b"MPX,0000000005.HELLO", "no comma"),
    ],
)
def test_message_reader_refuses_a_bad_prefix_naming_where_it_starts(sizes, bad, why):
    reader = MessageReader()
    got = []
    with pytest.raises(ProtocolError) as info:
        for chunk in _chunks(STREAM + bad, sizes):
            got += reader.feed(chunk)
        # A chunk that completes bodies returns them; its bad prefix raises on the next call.
        reader.feed(b"")
    assert got == BODIES
    assert info.value.offset == END
    assert f"offset {END}" in str(info.value)
    assert why in str(info.value)


def test_message_reader_stays_broken_after_a_bad_prefix():
    reader = MessageReader(offset=10)
    with pytest.raises(ProtocolError, match="offset 10"):
        reader.feed(b"GARBAGE")
    with pytest.raises(ProtocolError, match="offset 10"):
        reader.feed(SET_FRAMES)


def test_recv_message_reads_messages_from_a_socket():
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(5)
        b.sendall(STREAM)
        assert [recv_message(a, offset=o) for o in STARTS] == BODIES


def test_recv_message_loops_over_a_large_body():
    body = bytes(range(256)) * 4096  # 1 MiB: more than one recv
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(5)
        sender = threading.Thread(target=b.sendall, args=(frame(body),))
        sender.start()
        assert recv_message(a) == body
        sender.join()


def test_recv_message_says_closed_when_the_peer_closes_first():
    a, b = socket.socketpair()
    with a:
        b.close()
        with pytest.raises(EOFError, match="closed before a message at offset 7"):
            recv_message(a, offset=7)


@pytest.mark.parametrize("cut", [1, 14, 15, 30, 41])
def test_recv_message_names_the_bytes_read_when_the_peer_closes_mid_message(cut):
    a, b = socket.socketpair()
    with a:
        b.sendall(SET_FRAMES[:cut])
        b.close()
        with pytest.raises(EOFError) as info:
            recv_message(a, offset=42)
    text = str(info.value)
    assert f"connection closed after {cut} bytes of a message at offset 42" in text


def test_recv_message_refuses_a_bad_prefix():
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"MPX,000000002X,SET,NUMFRAMESTOACQUIRE,4096")
        with pytest.raises(ProtocolError, match="offset 99") as info:
            recv_message(a, offset=99)
    assert info.value.offset == 99


# -- commands ----------------------------------------------------------------------------
def test_get_and_cmd_carry_the_dummy_value():
    assert len(",GET,COUNTERDEPTH,0") == 19  # 1 + 3 + 1 + 12 + 1 + 1
    assert encode_command("GET", "COUNTERDEPTH") == b"MPX,0000000019,GET,COUNTERDEPTH,0"
    assert len(",CMD,STARTACQUISITION,0") == 23  # 1 + 3 + 1 + 16 + 1 + 1
    assert encode_command("CMD", "STARTACQUISITION") == b"MPX,0000000023,CMD,STARTACQUISITION,0"


def test_set_values_are_ascii_decimal():
    assert len(",SET,ACQUISITIONTIME,1.5") == 24  # 1 + 3 + 1 + 15 + 1 + 3
    message = encode_command("SET", "ACQUISITIONTIME", 1.5)
    assert message == b"MPX,0000000024,SET,ACQUISITIONTIME,1.5"
    assert encode_command("SET", "THRESHOLD0", "120.0").endswith(b",SET,THRESHOLD0,120.0")


@pytest.mark.parametrize(
    "kind, name, value, why",
    [
        ("PUT", "COUNTERDEPTH", None, "'PUT'"),
        ("get", "COUNTERDEPTH", None, "'get'"),
        ("GET", "counterdepth", None, "'counterdepth'"),
        ("GET", "COUNTER,DEPTH", None, "'COUNTER,DEPTH'"),
        ("GET", "", None, "''"),
        ("GET", "COUNTERDÉPTH", None, "'COUNTERDÉPTH'"),
        ("SET", "COUNTERDEPTH", None, "needs a value"),
        ("GET", "COUNTERDEPTH", 12, "takes no value"),
        ("CMD", "STARTACQUISITION", "0", "takes no value"),
        ("SET", "SOFTWAREVERSION", "1,7", "'1,7'"),
        ("SET", "SOFTWAREVERSION", "", "''"),
    ],
)
def test_encode_command_refuses_naming_what(kind, name, value, why):
    with pytest.raises(ValueError) as info:
        encode_command(kind, name, value)
    assert why in str(info.value)


@pytest.mark.parametrize(
    "body, command",
    [
        (b"GET,COUNTERDEPTH,0", Command("GET", "COUNTERDEPTH", "0")),
        (b"SET,NUMFRAMESTOACQUIRE,4096", Command("SET", "NUMFRAMESTOACQUIRE", "4096")),
        (b"CMD,SOFTTRIGGER,0", Command("CMD", "SOFTTRIGGER", "0")),
        # an unknown name is answered with status 2, so it parses
        (b"GET,NOSUCHTHING,0", Command("GET", "NOSUCHTHING", "0")),
    ],
)
def test_parse_command(body, command):
    assert parse_command(body) == command
    kind, name, value = command.kind, command.name, command.value
    message = encode_command(kind, name, value if kind == "SET" else None)
    assert message == frame(body)


@pytest.mark.parametrize(
    "body, why",
    [
        (b"GET,COUNTERDEPTH", "3 fields, got 2"),
        (b"SET,COUNTERDEPTH,1,2", "3 fields, got 4"),
        (b"", "3 fields, got 1"),
        (b"PUT,COUNTERDEPTH,0", "unknown request kind 'PUT'"),
        (b"GET,COUNTER\xffDEPTH,0", "not ASCII"),
        (b"GET,COUNTER\x00DEPTH,0", "control characters"),
    ],
)
def test_parse_command_refuses_malformed_bodies(body, why):
    with pytest.raises(ProtocolError) as info:
        parse_command(body, offset=5)
    assert why in str(info.value)
    assert "offset 5" in str(info.value)


@pytest.mark.parametrize("status", [0, 1, 2, 3])
def test_replies_with_each_status(status):
    # 1 + 3 + 1 + 12 + 1 + 2 + 1 + 1 = 22; 1 + 3 + 1 + 18 + 1 + 1 = 25; 1 + 3 + 1 + 11 + 1 + 1
    get = b"GET,COUNTERDEPTH,12,%d" % status
    set_ = b"SET,NUMFRAMESTOACQUIRE,%d" % status
    cmd = b"CMD,SOFTTRIGGER,%d" % status
    assert encode_reply("GET", "COUNTERDEPTH", status, 12) == b"MPX,0000000022," + get
    assert encode_reply("SET", "NUMFRAMESTOACQUIRE", status) == b"MPX,0000000025," + set_
    assert encode_reply("CMD", "SOFTTRIGGER", Status(status)) == b"MPX,0000000018," + cmd
    assert parse_reply(get) == Reply("GET", "COUNTERDEPTH", Status(status), "12")
    assert parse_reply(set_) == Reply("SET", "NUMFRAMESTOACQUIRE", Status(status), None)
    assert parse_reply(cmd) == Reply("CMD", "SOFTTRIGGER", Status(status), None)
    assert parse_reply(cmd).status is Status(status)


def test_status_codes_and_their_text():
    assert [int(s) for s in (Status.OK, Status.BUSY, Status.UNKNOWN, Status.OUT_OF_RANGE)] == [
        0,
        1,
        2,
        3,
    ]
    assert STATUS_TEXT == {
        0: "OK",
        1: "busy",
        2: "unrecognised command",
        3: "parameter out of range",
    }


def test_a_refused_get_needs_no_value():
    assert encode_reply("GET", "NOSUCH", Status.UNKNOWN) == b"MPX,0000000015,GET,NOSUCH,0,2"
    assert len(",GET,NOSUCH,0,2") == 15
    # a misspelt name is echoed as the client sent it
    assert encode_reply("GET", "nosuch", 2).endswith(b",GET,nosuch,0,2")
    assert encode_reply("CMD", "", 2) == b"MPX,0000000007,CMD,,2"


@pytest.mark.parametrize(
    "args, why",
    [
        (("GET", "COUNTERDEPTH", 0), "needs a value"),
        (("SET", "COUNTERDEPTH", 0, 12), "carries no value"),
        (("SET", "COUNTERDEPTH", 4), "4 is not a valid Status"),
        (("PUT", "COUNTERDEPTH", 0), "'PUT'"),
        (("GET", "COUNTERDEPTH", 0, "1,2"), "'1,2'"),
    ],
)
def test_encode_reply_refuses(args, why):
    with pytest.raises(ValueError) as info:
        encode_reply(*args)
    assert why in str(info.value)


@pytest.mark.parametrize(
    "body, why",
    [
        (b"GET,COUNTERDEPTH,0", "4 fields, got 3"),
        (b"SET,COUNTERDEPTH,12,0", "3 fields, got 4"),
        (b"SET,COUNTERDEPTH,4", "status '4'"),
        (b"SET,COUNTERDEPTH,ok", "status 'ok'"),
        (b"SET,COUNTERDEPTH,", "status ''"),
        (b"MPX,COUNTERDEPTH,0", "unknown reply kind 'MPX'"),
    ],
)
def test_parse_reply_refuses(body, why):
    with pytest.raises(ProtocolError) as info:
        parse_reply(body, offset=3)
    assert why in str(info.value)
    assert info.value.offset == 3


# -- parameters --------------------------------------------------------------------------
def test_the_parameter_table_has_every_row_of_the_docs():
    names = [
        *("NUMFRAMESTOACQUIRE", "ACQUISITIONTIME", "ACQUISITIONPERIOD", "COUNTERDEPTH"),
        *("CONTINUOUSRW", "TRIGGERSTART", "TRIGGERSTOP", "NUMFRAMESPERTRIGGER"),
        *("RUNHEADLESS", "FILEFORMAT", "FILEENABLE", "IMAGEX", "IMAGEY", "DETECTORSTATUS"),
        *("SOFTWAREVERSION", "STARTACQUISITION", "STOPACQUISITION", "SOFTTRIGGER"),
        *(f"THRESHOLD{n}" for n in range(8)),
    ]
    assert sorted(PARAMETERS) == sorted(names)
    assert all(p.name == n for n, p in PARAMETERS.items())
    access = {n: p.access for n, p in PARAMETERS.items()}
    assert {n for n, a in access.items() if a == "cmd"} == {
        "STARTACQUISITION",
        "STOPACQUISITION",
        "SOFTTRIGGER",
    }
    assert {n for n, a in access.items() if a == "get"} == {
        "IMAGEX",
        "IMAGEY",
        "DETECTORSTATUS",
        "SOFTWAREVERSION",
    }


def test_the_defaults():
    defaults = {n: p.default for n, p in PARAMETERS.items() if p.access != "cmd"}
    assert defaults == {
        "NUMFRAMESTOACQUIRE": 1,
        "ACQUISITIONTIME": 1.0,
        "ACQUISITIONPERIOD": 1.0,
        "COUNTERDEPTH": 12,
        "CONTINUOUSRW": 0,
        "TRIGGERSTART": 0,
        "TRIGGERSTOP": 0,
        "NUMFRAMESPERTRIGGER": 1,
        "RUNHEADLESS": 1,
        "FILEFORMAT": 0,
        "FILEENABLE": 0,
        "IMAGEX": 256,
        "IMAGEY": 256,
        "THRESHOLD0": 10.0,
        **{f"THRESHOLD{n}": 0.0 for n in range(1, 8)},
        "DETECTORSTATUS": 0,
        "SOFTWAREVERSION": "1.7.7.0",
    }
    for name, value in defaults.items():
        assert type(value) is PARAMETERS[name].kind, name


ALLOWED = {
    "COUNTERDEPTH": ["1", "6", "12", "24"],
    "CONTINUOUSRW": ["0", "1"],
    "TRIGGERSTART": ["0", "1", "2", "3", "4", "5"],
    "TRIGGERSTOP": ["0", "1", "2", "3", "4", "5"],
    "RUNHEADLESS": ["0", "1"],
    "FILEFORMAT": ["0", "2"],
    "FILEENABLE": ["0", "1"],
    "NUMFRAMESTOACQUIRE": ["1", "4096", "2147483647"],
    "NUMFRAMESPERTRIGGER": ["1", "256", "2147483647"],
}


@pytest.mark.parametrize("name, text", [(n, t) for n, ts in ALLOWED.items() for t in ts])
def test_check_value_accepts_each_allowed_integer(name, text):
    value = check_value(name, text)
    assert type(value) is int
    assert value == int(text)


@pytest.mark.parametrize(
    "name, text, value",
    [
        ("ACQUISITIONTIME", "0.001", 0.001),
        ("ACQUISITIONTIME", "1.5", 1.5),
        ("ACQUISITIONTIME", "100000", 100000.0),
        ("ACQUISITIONPERIOD", "1e2", 100.0),
        ("ACQUISITIONPERIOD", ".5", 0.5),
        *[(f"THRESHOLD{n}", "0", 0.0) for n in range(8)],
        ("THRESHOLD7", "999", 999.0),
        ("THRESHOLD3", "120.5", 120.5),
    ],
)
def test_check_value_accepts_floats_in_range(name, text, value):
    got = check_value(name, text)
    assert type(got) is float
    assert got == value


@pytest.mark.parametrize(
    "name, text, allowed",
    [
        ("COUNTERDEPTH", "8", "allowed 1, 6, 12, 24"),
        ("COUNTERDEPTH", "12.0", "allowed 1, 6, 12, 24"),
        ("TRIGGERSTART", "6", "allowed 0, 1, 2, 3, 4, 5"),
        ("TRIGGERSTOP", "-1", "allowed 0, 1, 2, 3, 4, 5"),
        ("FILEFORMAT", "1", "allowed 0, 2"),
        ("CONTINUOUSRW", "2", "allowed 0, 1"),
        ("ACQUISITIONTIME", "0", "allowed 0.001 to 100000"),
        ("ACQUISITIONTIME", "-1", "allowed 0.001 to 100000"),
        ("ACQUISITIONTIME", "abc", "allowed 0.001 to 100000"),
        ("ACQUISITIONTIME", "nan", "allowed 0.001 to 100000"),
        ("ACQUISITIONTIME", "inf", "allowed 0.001 to 100000"),
        ("ACQUISITIONTIME", "1e999", "allowed 0.001 to 100000"),
        ("ACQUISITIONTIME", "100000.1", "allowed 0.001 to 100000"),
        ("ACQUISITIONPERIOD", "", "allowed 0.001 to 100000"),
        ("THRESHOLD0", "1000", "allowed 0 to 999"),
        ("NUMFRAMESTOACQUIRE", "0", "allowed 1 to 2147483647"),
        ("NUMFRAMESTOACQUIRE", "2147483648", "allowed 1 to 2147483647"),
        ("NUMFRAMESTOACQUIRE", "1.5", "allowed 1 to 2147483647"),
        ("NUMFRAMESTOACQUIRE", " 12", "allowed 1 to 2147483647"),
        ("NUMFRAMESTOACQUIRE", "1_000", "allowed 1 to 2147483647"),
    ],
)
def test_check_value_refuses_naming_parameter_value_and_range(name, text, allowed):
    with pytest.raises(ValueError) as info:
        check_value(name, text)
    message = str(info.value)
    assert message.startswith(f"{name}: {text!r} is ")
    assert message.endswith(allowed)


@pytest.mark.parametrize("name", ["NOSUCHTHING", "counterdepth", "IMAGEX", "STARTACQUISITION"])
def test_check_value_refuses_what_cannot_be_set_with_key_error(name):
    with pytest.raises(KeyError, match=name):
        check_value(name, "1")


@pytest.mark.parametrize(
    "value, text",
    [
        (12, "12"),
        (-3, "-3"),
        (True, "1"),
        (np.int64(4096), "4096"),
        (1.5, "1.5"),
        (0.001, "0.001"),
        (1.0, "1.0"),
        (1e-05, "0.00001"),
        (1e16, "10000000000000000"),
        (np.float32(0.5), "0.5"),
        ("1.7.7.0", "1.7.7.0"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_format_value_refuses():
    with pytest.raises(ValueError, match="nan"):
        format_value(float("nan"))
    with pytest.raises(TypeError, match="object"):
        format_value(object())


# -- acquisition header ------------------------------------------------------------------
def test_compose_acquisition_header_writes_lines_and_pads():
    body = compose_acquisition_header({"A": "1", "B (c)": "12:30:00"}, size=64)
    text = b"HDR,\t\nA:\t1\nB (c):\t12:30:00\nEnd\t"
    assert len(text) == 6 + 5 + 16 + 4
    assert body == text + b" " * 33


@pytest.mark.parametrize("chips", [1, 4])
def test_the_default_acquisition_header_round_trips_in_2048_bytes(chips):
    when = datetime(2020, 5, 18, 16, 51, 48)
    fields = default_acquisition_header({}, chips=chips, when=when)
    body = compose_acquisition_header(fields)
    assert len(body) == 2048
    assert body.startswith(b"HDR,\t\nTime and Date Stamp (day, mnth, yr, hr, min, s):\t")
    assert b"\nEnd\t" in body
    assert body.rstrip(b" ").endswith(b"\nEnd\t")
    assert parse_acquisition_header(body) == fields
    assert fields["Time and Date Stamp (day, mnth, yr, hr, min, s)"] == "18/05/2020 16:51:48"


def test_the_default_acquisition_header_keys_are_those_of_the_docs():
    keys = [
        "Time and Date Stamp (day, mnth, yr, hr, min, s)",
        "Chip ID",
        "Chip Type (Medipix 3.0, Medipix 3.1, Medipix 3RX)",
        "Assembly Size (NX1, 2X2)",
        "Chip Mode  (SPM, CSM, CM, CSCM)",
        "Counter Depth (number)",
        "Gain",
        "Active Counters",
        "Thresholds (keV)",
        "DACs",
        "bpc File",
        "DAC File",
        "Gap Fill Mode",
        "Flat Field File",
        "Dead Time File",
        "Acquisition Type (Normal, Th_scan, Config)",
        "Frames in Acquisition (Number)",
        "Frames per Trigger (Number)",
        "Trigger Start (Positive, Negative, Internal)",
        "Trigger Stop (Positive, Negative, Internal)",
        "Sensor Bias (V)",
        "Sensor Polarity (Positive, Negative)",
        "Temperature (C)",
        "Humidity (%)",
        "Medipix Clock (MHz)",
        "Readout System",
        "Software Version",
    ]
    fields = default_acquisition_header({}, chips=1, when=datetime(2020, 1, 2, 3, 4, 5))
    assert list(fields) == keys


def test_the_default_acquisition_header_takes_the_settings():
    settings = {
        "COUNTERDEPTH": 6,
        "NUMFRAMESTOACQUIRE": 4096,
        "NUMFRAMESPERTRIGGER": 64,
        "TRIGGERSTART": 1,
        "TRIGGERSTOP": 2,
        "THRESHOLD0": 120.0,
        "THRESHOLD1": 511.0,
        "SOFTWAREVERSION": "1.8.0.0",
    }
    one = default_acquisition_header(settings, chips=1, when=datetime(2020, 5, 18))
    assert one["Counter Depth (number)"] == "6"
    assert one["Frames in Acquisition (Number)"] == "4096"
    assert one["Frames per Trigger (Number)"] == "64"
    assert one["Trigger Start (Positive, Negative, Internal)"] == "Positive"
    assert one["Trigger Stop (Positive, Negative, Internal)"] == "Negative"
    assert one["Thresholds (keV)"] == (
        "1.200000E+2,5.110000E+2,0.000000E+0,0.000000E+0,"
        "0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0"
    )
    assert one["Software Version"] == "1.8.0.0"
    assert one["Assembly Size (NX1, 2X2)"] == "1x1"
    assert one["Chip ID"] == "W529_F5,-,-,-"
    assert one["Sensor Bias (V)"] == "120 V"
    assert one["DACs"].count(",") == 26
    quad = default_acquisition_header({}, chips=4, when=datetime(2020, 5, 18))
    assert quad["Assembly Size (NX1, 2X2)"] == "2x2"
    assert len(quad["Chip ID"].split(",")) == 4
    assert "-" not in quad["Chip ID"].split(",")
    assert quad["Counter Depth (number)"] == "12"
    assert quad["Trigger Start (Positive, Negative, Internal)"] == "Internal"
    assert quad["Thresholds (keV)"].startswith("1.000000E+1,0.000000E+0,")


@pytest.mark.parametrize("code, word", [(0, "Internal"), (3, "Positive"), (4, "Negative")])
def test_trigger_words(code, word):
    fields = default_acquisition_header({"TRIGGERSTOP": code}, chips=1, when=datetime(2020, 1, 1))
    assert fields["Trigger Stop (Positive, Negative, Internal)"] == word


def test_the_default_acquisition_header_refuses_bad_input():
    with pytest.raises(ValueError, match="1 or 4 chips, not 2"):
        default_acquisition_header({}, chips=2, when=datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="TRIGGERSTART 9"):
        default_acquisition_header({"TRIGGERSTART": 9}, chips=1, when=datetime(2020, 1, 1))


def test_parse_acquisition_header_tolerates_crlf_and_nul_padding():
    body = b"HDR,\t\r\nChip ID:\tW529_F5,-,-,-\r\nTime:\t16:51:48\r\nEmpty:\t\r\nEnd\t"
    body += b"\0" * 40
    assert parse_acquisition_header(body) == {
        "Chip ID": "W529_F5,-,-,-",
        "Time": "16:51:48",
        "Empty": "",
    }


@pytest.mark.parametrize(
    "body, why",
    [
        (b"HDX,\t\nA:\t1\nEnd\t", "starts with b'HDR,'"),
        (b"MPX,0000002049,HDR,", "starts with b'HDR,'"),
        (b"HDR,\t\nA:\t1\n" + b" " * 20, "no End line"),
        (b"HDR,\t\nA:\t1\nno colon here\nEnd\t", "line 2 has no colon: 'no colon here'"),
    ],
)
def test_parse_acquisition_header_refuses(body, why):
    with pytest.raises(ProtocolError) as info:
        parse_acquisition_header(body, offset=15)
    assert why in str(info.value)
    assert "offset 15" in str(info.value)


@pytest.mark.parametrize(
    "fields, size, why",
    [
        ({"A": "x" * 100}, 64, "more than 64"),
        ({"A": "one\ntwo"}, 2048, "not one line"),
        ({"A\n": "1"}, 2048, "not one line"),
        ({"Ä": "1"}, 2048, "not one line of ASCII"),
        ({"End": "1"}, 2048, "'End'"),
    ],
)
def test_compose_acquisition_header_refuses(fields, size, why):
    with pytest.raises(ValueError, match=why):
        compose_acquisition_header(fields, size)


# -- MQ1 frame header --------------------------------------------------------------------
DACS = "175,511,000,000,000,000,000,000,125,255,125,125,100,100,082,100,087,030,128,004,255,"
DACS += "129,128,176,168,511,511"
MQ1_TEXT = (
    "MQ1,000001,00384,01,0256,0256,U08,   1x1,01,2020-05-18 16:51:49.971626,0.000555,0,0,0,"
    "1.200000E+2,5.110000E+2,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,0.000000E+0,"
    "0.000000E+0,3RX," + DACS + ",MQ1A,2020-05-18T14:51:49.971626178Z,555000ns,6"
)
MQ1_EXAMPLE = MQ1_TEXT.encode().ljust(384, b" ")
EXAMPLE = FrameHeader(
    number=1,
    header_bytes=384,
    chips=1,
    x=256,
    y=256,
    pixel_depth="U08",
    layout="   1x1",
    chip_select=1,
    timestamp="2020-05-18 16:51:49.971626",
    shutter_s=0.000555,
    counter=0,
    colour=0,
    gain=0,
    thresholds=(120.0, 511.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    dac_format="3RX",
    dacs=(
        *(175, 511, 0, 0, 0, 0, 0, 0, 125, 255, 125, 125, 100, 100, 82, 100, 87, 30, 128, 4),
        *(255, 129, 128, 176, 168, 511, 511),
    ),
    ext_timestamp="2020-05-18T14:51:49.971626178Z",
    shutter_ns=555000,
    counter_depth=6,
)


def test_a_hand_written_mq1_header_parses():
    assert len(MQ1_TEXT) < 384
    assert len(EXAMPLE.dacs) == 27
    assert parse_frame_header(MQ1_EXAMPLE) == EXAMPLE


def test_compose_writes_the_hand_written_header():
    assert compose_frame_header(EXAMPLE) == MQ1_EXAMPLE


def test_mq1_parses_with_nul_padding_a_trailing_comma_and_pixels_after_it():
    nul = (MQ1_TEXT + ",").encode().ljust(384, b"\0")
    assert parse_frame_header(nul) == EXAMPLE
    pixels = bytes(range(256)) * 256
    assert parse_frame_header(MQ1_EXAMPLE + pixels, offset=0) == EXAMPLE


def test_mq1_without_the_extension():
    text = MQ1_TEXT[: MQ1_TEXT.index(",MQ1A")]
    header = parse_frame_header(text.encode().ljust(384))
    assert (header.ext_timestamp, header.shutter_ns, header.counter_depth) == (None,) * 3
    assert header.dacs == EXAMPLE.dacs
    bare = FrameHeader(**{**EXAMPLE.to_dict(), "ext_timestamp": None, "shutter_ns": None,
                          "counter_depth": None, "thresholds": EXAMPLE.thresholds,
                          "dacs": EXAMPLE.dacs})  # fmt: skip
    assert header == bare
    assert compose_frame_header(bare) == text.encode().ljust(384)


def _with_field(index: int, value: str) -> bytes:
    fields = MQ1_TEXT.split(",")
    fields[index] = value
    return ",".join(fields).encode().ljust(384)


@pytest.mark.parametrize(
    "index, value, name",
    [
        (0, "MQ2", "tag"),
        (1, "00000A", "frame number"),
        (2, "0O384", "header size"),
        (3, "", "chips"),
        (4, "02x6", "X"),
        (5, "-256", "Y"),
        (6, "U09", "pixel depth"),
        (8, "0G", "chip select"),
        (10, "0.0005.5", "shutter (s)"),
        (11, "+0", "counter"),
        (13, "one", "gain"),
        (17, "1.0E+x", "threshold 3"),
        (21, "nan", "threshold 7"),
        (26, "1 1", "DAC 3"),
        (51, "", "UTC time stamp"),
        (52, "555000us", "shutter (ns)"),
        (53, "six", "counter depth"),
    ],
)
def test_a_corrupt_mq1_field_is_named(index, value, name):
    with pytest.raises(ProtocolError) as info:
        parse_frame_header(_with_field(index, value), offset=4096)
    text = str(info.value)
    assert f"field {index} ({name})" in text
    assert "offset 4096" in text
    assert info.value.offset == 4096


def test_the_field_indices_of_the_example():
    fields = MQ1_TEXT.split(",")
    assert fields[22] == "3RX"
    assert fields[23:50] == DACS.split(",")
    assert fields[50:] == ["MQ1A", "2020-05-18T14:51:49.971626178Z", "555000ns", "6"]


def test_a_short_mq1_header_is_refused():
    with pytest.raises(ProtocolError, match="field 5 \\(Y\\) is missing"):
        parse_frame_header(b"MQ1,000001,00384,01,0256".ljust(384))
    with pytest.raises(ProtocolError, match="field 52 \\(shutter \\(ns\\)\\) is missing"):
        parse_frame_header(MQ1_TEXT[: MQ1_TEXT.index(",555000ns")].encode().ljust(384))
    with pytest.raises(ProtocolError, match="header size 384, but only 200 bytes"):
        parse_frame_header(MQ1_EXAMPLE[:200], offset=0)
    with pytest.raises(ProtocolError, match="field 2 \\(header size\\) is missing"):
        parse_frame_header(b"MQ1,000001")


@pytest.fixture
def local_is_utc_plus_2(monkeypatch):
    # A POSIX TZ string needs no time zone database: local time is UTC + 2 h.
    monkeypatch.setenv("TZ", "XXX-02")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


WHEN = datetime(2020, 5, 18, 14, 51, 49, 971626, tzinfo=UTC)


@pytest.mark.parametrize(
    "chips, raw, depth, x, y, pixel_depth",
    [
        (1, False, 1, 256, 256, "U01"),
        (1, False, 6, 256, 256, "U08"),
        (1, False, 12, 256, 256, "U16"),
        (1, False, 24, 256, 256, "U32"),
        (1, True, 6, 256, 256, "R64"),
        (1, True, 24, 256, 256, "R64"),
        (4, False, 12, 512, 512, "U16"),
        (4, False, 24, 512, 512, "U32"),
        (4, True, 1, 1024, 256, "R64"),
        (4, True, 12, 1024, 256, "R64"),
    ],
)
def test_make_frame_header_round_trips(local_is_utc_plus_2, chips, raw, depth, x, y, pixel_depth):
    h = make_frame_header(7, chips=chips, depth=depth, raw=raw, shutter_s=0.001,
                          thresholds=(120.0, 511.0), when=WHEN)  # fmt: skip
    size = 384 if chips == 1 else 768
    assert (h.number, h.header_bytes, h.chips, h.x, h.y) == (7, size, chips, x, y)
    assert h.pixel_depth == pixel_depth
    assert h.layout == ("   1x1" if chips == 1 else "   2x2")
    assert h.chip_select == (0x01 if chips == 1 else 0x0F)
    assert h.timestamp == "2020-05-18 16:51:49.971626"
    assert h.ext_timestamp == "2020-05-18T14:51:49.971626000Z"
    assert h.thresholds == (120.0, 511.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert h.dac_format == "3RX"
    assert len(h.dacs) == 27 * chips
    assert all(0 <= d <= 511 for d in h.dacs)
    assert (h.shutter_s, h.shutter_ns, h.counter_depth) == (0.001, 1_000_000, depth)
    data = compose_frame_header(h)
    assert len(data) == size
    head = b"MQ1,000007,%05d,%02d,%04d,%04d,%s," % (size, chips, x, y, pixel_depth.encode())
    assert data.startswith(head)
    assert b",1000000ns,%d " % depth in data
    assert parse_frame_header(data) == h
    assert json.loads(json.dumps(h.to_dict())) == h.to_dict()


def test_a_naive_time_is_local(local_is_utc_plus_2):
    when = datetime(2020, 5, 18, 16, 51, 49, 971626)
    h = make_frame_header(1, chips=1, depth=6, raw=False, shutter_s=0.000555, thresholds=(),
                          when=when)  # fmt: skip
    assert h.timestamp == "2020-05-18 16:51:49.971626"
    assert h.ext_timestamp == "2020-05-18T14:51:49.971626000Z"
    assert h.shutter_ns == 555000


def test_frame_numbers_grow_past_six_digits():
    h = make_frame_header(1234567, chips=1, depth=6, raw=False, shutter_s=0.001,
                          thresholds=(), when=WHEN)  # fmt: skip
    data = compose_frame_header(h)
    assert data.startswith(b"MQ1,1234567,00384,")
    assert parse_frame_header(data).number == 1234567


def test_to_dict_is_json_and_rebuilds_the_header():
    d = json.loads(json.dumps(EXAMPLE.to_dict()))
    assert d["thresholds"][:2] == [120.0, 511.0]
    assert d["layout"] == "   1x1"
    rebuilt = FrameHeader(**{**d, "thresholds": tuple(d["thresholds"]), "dacs": tuple(d["dacs"])})
    assert rebuilt == EXAMPLE


@pytest.mark.parametrize(
    "change, why",
    [
        ({"thresholds": (0.0,) * 7}, "8 finite thresholds, got (0.0, 0.0"),
        ({"thresholds": (float("inf"),) * 8}, "8 finite thresholds, got (inf"),
        ({"number": 1.0}, "frame number 1.0"),
        ({"x": 10000}, "X 10000 does not fit 4 digits"),
        ({"chips": -1}, "chips -1"),
        ({"chip_select": 0x100}, "chip select 256"),
        ({"dacs": (1000,)}, "DAC 1000"),
        ({"header_bytes": 256}, "more than 256"),
        ({"shutter_ns": None}, "all of its three fields"),
        ({"pixel_depth": "U,8"}, "pixel depth 'U,8'"),
        ({"shutter_s": float("nan")}, "shutter time nan"),
    ],
)
def test_compose_frame_header_refuses_fields_that_do_not_fit(change, why):
    bad = FrameHeader(**{**EXAMPLE.__dict__, **change})
    with pytest.raises(ValueError, match=re.escape(why)):
        compose_frame_header(bad)


def test_compose_frame_header_takes_numpy_integers():
    header = FrameHeader(**{**EXAMPLE.__dict__, "number": np.int64(12), "x": np.uint16(256)})
    assert compose_frame_header(header).startswith(b"MQ1,000012,00384,01,0256,0256,")


@pytest.mark.parametrize(
    "kwargs, why",
    [
        ({"chips": 2}, "1 or 4 chips"),
        ({"depth": 8}, "counter depth 8"),
        ({"thresholds": (0.0,) * 9}, "8 thresholds, got 9"),
    ],
)
def test_make_frame_header_refuses(kwargs, why):
    args = {"chips": 1, "depth": 6, "raw": False, "shutter_s": 0.001, "thresholds": ()}
    with pytest.raises(ValueError, match=why):
        make_frame_header(1, **{**args, **kwargs}, when=WHEN)
