"""The status board (STATUS, its message and acknowledging a fault) and the one-line
error text of the message PVs."""

from __future__ import annotations

import asyncio
import errno

import pytest

from bluestem.instrument import Health
from bluestem.ioc.status import StatusBoard, error_text, wire_text


def _board():
    published = []

    async def publish(health, message):
        published.append((health, message))

    return StatusBoard(publish), published


def test_a_fault_holds_until_acknowledged_and_flags_survive_it():
    board, published = _board()

    async def go():
        await board.flag("P:A", "P:A: 7 is not allowed")
        await board.fault("acquisition failed: disk full")
        assert board.health() == (Health.FAULT, "acquisition failed: disk full")
        await board.clear("P:A")
        assert board.health()[0] == Health.FAULT  # a cleared flag does not clear a fault
        await board.flag("P:B", "P:B: bad")
        assert await board.acknowledge() == "acquisition failed: disk full"
        assert board.health() == (Health.WARN, "P:B: bad")  # the flag is still up
        assert await board.acknowledge() is None  # nothing left to acknowledge
        await board.clear("P:B")
        assert board.health() == (Health.OK, "OK")

    asyncio.run(go())
    assert published[-1] == (Health.OK, "OK")
    assert (Health.FAULT, "acquisition failed: disk full") in published


def test_error_text_of_an_hdf5_write_failure():
    # As h5py raises it: errno 28 and HDF5's multi-line detail in strerror.
    exc = OSError(
        errno.ENOSPC,
        "Can't write unprocessed chunk data (file write failed: time = Thu Dec  3 "
        "12:08:23 2026\n, filename = '/d/x.h5', file descriptor = 10, errno = 28)",
    )
    text = error_text(exc)
    assert text == "No space left on device (ENOSPC): Can't write unprocessed chunk data"
    assert wire_text(text) == text


@pytest.mark.parametrize(
    "exc, expected",
    [
        (OSError(errno.EROFS, "Read-only file system", "/d"),
         "Read-only file system (EROFS) (/d)"),
        (OSError(errno.EIO, "I/O error"), "Input/output error (EIO): I/O error"),
        (ValueError("frame 3:\n  bad   shape"), "frame 3: bad shape"),
        (RuntimeError(), "RuntimeError"),
    ],
)  # fmt: skip
def test_error_text_is_one_line_naming_the_cause(exc, expected):
    assert error_text(exc) == expected


def test_a_held_scan_is_paused_between_warn_and_fault():
    board, _published = _board()

    async def go():
        await board.flag("P:A", "P:A: bad")
        await board.hold("scan held after 64 of 256 positions")
        assert board.health() == (Health.PAUSED, "scan held after 64 of 256 positions")
        await board.fault("acquisition failed: x")
        assert board.health()[0] == Health.FAULT  # a fault outranks the pause
        await board.acknowledge()
        assert board.health()[0] == Health.PAUSED
        await board.hold(None)
        assert board.health() == (Health.WARN, "P:A: bad")

    asyncio.run(go())
    # The enum indices that clients already know are unchanged; PAUSED comes after them.
    assert [h.value for h in Health] == ["OK", "WARN", "FAULT", "PAUSED"]
