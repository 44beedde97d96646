"""The Merlin detector's side of both sockets: ``bluestem merlin-sim``.

:class:`MerlinSimulator` listens on a command port and a data port (docs/merlin.md). The
command port answers every request of the protocol's parameter table with Merlin's
replies (status last: 0 ok, 1 busy, 2 unrecognised, 3 out of range). The data port keeps
one client (a new connection replaces the old one); ``STARTACQUISITION`` sends it the
acquisition header and then ``NUMFRAMESTOACQUIRE`` frame messages, paced at the frame
period, from a frame provider (:mod:`bluestem.ioc.merlin.sim_frames`), with the faults
of ``--faults`` (:mod:`bluestem.ioc.merlin.sim_faults`).

Triggers: internal (``TRIGGERSTART 0``) starts at once; soft (``5``) sends
``NUMFRAMESPERTRIGGER`` frames per ``SOFTTRIGGER``. The simulator has no trigger input:
the hardware edges (1–4) behave as internal triggering at the frame period, as a scan
generator sending one edge per frame would.

Frames of a block share one time stamp (the block's): a real detector stamps each frame.
Every blocking call is on a thread of its own; nothing runs at import time.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import numpy as np

from . import headers, parameters, pixels, protocol
from .sim_faults import SimFaults

__all__ = ["MerlinSimulator"]

#: Bytes of frame messages sent in one block (and the longest a block may take, s).
BLOCK_BYTES = 4 * 1024**2
BLOCK_SECONDS = 0.05
#: Seconds an acquisition waits for a data client before discarding its frames.
CLIENT_WAIT = 5.0
SOFT, INTERNAL = 5, 0


class MerlinSimulator:
    """A simulated MerlinEM on two TCP ports.

    Parameters
    ----------
    frames : provider
        ``frames(first, count, depth) -> (count, ky, kx)`` uint32 (0-based frame index).
    host : str
        Interface to listen on (loopback by default).
    command_port, data_port : int
        Ports; 0 picks free ones (see :attr:`ports`).
    chips : int
        1 (256²) or 4 (a quad, 512²).
    faults : str
        :class:`~bluestem.ioc.merlin.sim_faults.SimFaults` syntax (checked now).
    log : callable
        ``log(text)`` for one line per event (default: nothing).
    """

    def __init__(self, frames, *, host="127.0.0.1", command_port=6341, data_port=6342,
                 chips=1, faults="", log: Callable[[str], None] | None = None):  # fmt: skip
        self.shape = pixels.frame_shape(chips)
        self.chips, self.frames, self.host = int(chips), frames, host
        SimFaults.parse(faults, 1)  # refuse a bad --faults before listening
        self.faults = faults
        self.log = log or (lambda text: None)
        table = parameters.PARAMETERS
        self.settings = {n: p.default for n, p in table.items() if p.access != "cmd"}
        self.settings["IMAGEX"], self.settings["IMAGEY"] = self.shape[1], self.shape[0]
        self.acquisitions = 0
        self.sent = 0  # frames sent in the last acquisition
        self._lock = threading.Lock()
        self._acquiring = threading.Event()
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._triggers = threading.Semaphore(0)
        self._client: socket.socket | None = None
        self._client_ready = threading.Condition(self._lock)
        self._listeners = [self._listen(command_port), self._listen(data_port)]
        self._buffers: dict[str, np.ndarray] = {}  # the acquisition thread's, reused
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------
    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, int(port)))
        except OSError as exc:
            sock.close()
            raise OSError(f"merlin-sim: cannot listen on {self.host}:{port}: {exc}") from exc
        sock.listen(4)
        return sock

    @property
    def ports(self) -> tuple[int, int]:
        """(command port, data port) as bound."""
        return tuple(s.getsockname()[1] for s in self._listeners)  # type: ignore[return-value]

    def start(self) -> MerlinSimulator:
        """Accept connections on both ports (daemon threads)."""
        for target in (self._accept_commands, self._accept_data):
            thread = threading.Thread(target=target, daemon=True, name=target.__name__)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        """Stop any acquisition and close every socket."""
        self._closed.set()
        self._stop.set()
        self._triggers.release()
        for sock in [*self._listeners, self._client]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`close` or ``timeout`` s; True once closed."""
        return self._closed.wait(timeout)

    # -- the command port --------------------------------------------------------------
    def _accept_commands(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listeners[0].accept()
            except OSError:
                return
            threading.Thread(target=self._serve_commands, args=(conn,), daemon=True).start()

    def _serve_commands(self, conn: socket.socket) -> None:
        reader = protocol.MessageReader()
        with conn:
            while not self._closed.is_set():
                try:
                    data = conn.recv(65536)
                    if not data:
                        return
                    for body in reader.feed(data):
                        conn.sendall(self.handle(body))
                except (OSError, protocol.ProtocolError) as exc:
                    self.log(f"command connection closed: {exc}")
                    return

    def handle(self, body: bytes) -> bytes:
        """The reply message to one request body."""
        try:
            cmd = protocol.parse_command(body)
        except protocol.ProtocolError as exc:
            self.log(f"refused {bytes(body)[:60]!r}: {exc}")
            return protocol.encode_reply("CMD", "UNKNOWN", protocol.Status.UNKNOWN)
        param = parameters.PARAMETERS.get(cmd.name)
        if param is None or (cmd.kind == "CMD") != (param.access == "cmd"):
            return self._reply(cmd, protocol.Status.UNKNOWN)
        if cmd.kind == "GET":
            value = 1 if cmd.name == "DETECTORSTATUS" and self._acquiring.is_set() else None
            value = self.settings[cmd.name] if value is None else value
            return self._reply(cmd, protocol.Status.OK, protocol.format_value(value))
        if cmd.kind == "SET":
            return self._reply(cmd, self._set(cmd.name, cmd.value, param))
        return self._reply(cmd, self._command(cmd.name))

    def _reply(self, cmd, status, value=None) -> bytes:
        if status != protocol.Status.OK:
            self.log(f"{cmd.kind} {cmd.name} {cmd.value}: {protocol.STATUS_TEXT[int(status)]}")
        return protocol.encode_reply(cmd.kind, cmd.name, status, value)

    def _set(self, name, text, param) -> protocol.Status:
        if param.access != "set":
            return protocol.Status.UNKNOWN
        if self._acquiring.is_set():
            return protocol.Status.BUSY
        try:
            value = parameters.check_value(name, text)
        except (KeyError, ValueError) as exc:
            self.log(str(exc))
            return protocol.Status.OUT_OF_RANGE
        after = {**self.settings, name: value}
        if after["CONTINUOUSRW"] == 1 and after["COUNTERDEPTH"] == 24:
            self.log(f"SET {name} {text}: continuous read/write has no 24-bit mode")
            return protocol.Status.OUT_OF_RANGE
        self.settings[name] = value
        return protocol.Status.OK

    def _command(self, name: str) -> protocol.Status:
        if name == "STARTACQUISITION":
            with self._lock:
                if self._acquiring.is_set():
                    return protocol.Status.BUSY
                self._acquiring.set()
                self._stop.clear()
                self._triggers = threading.Semaphore(0)
                self.acquisitions += 1
                number, settings = self.acquisitions, dict(self.settings)
            threading.Thread(target=self._acquire, args=(number, settings), daemon=True,
                             name=f"merlin-sim-acquisition-{number}").start()  # fmt: skip
        elif name == "STOPACQUISITION":
            self._stop.set()
            self._triggers.release()
        elif name == "SOFTTRIGGER":
            if not self._acquiring.is_set() or self.settings["TRIGGERSTART"] != SOFT:
                return protocol.Status.OUT_OF_RANGE  # nothing waits for a soft trigger
            self._triggers.release()
        return protocol.Status.OK

    # -- the data port -----------------------------------------------------------------
    def _accept_data(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self._listeners[1].accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                old, self._client = self._client, conn
                self._client_ready.notify_all()
            if old is not None:
                old.close()
            self.log(f"data client {peer[0]}:{peer[1]} connected")

    def _wait_client(self) -> socket.socket | None:
        with self._lock:
            self._client_ready.wait_for(lambda: self._client is not None, CLIENT_WAIT)
            return self._client

    def _drop_client(self, conn: socket.socket) -> None:
        with self._lock:
            if self._client is conn:
                self._client = None
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()

    def _acquire(self, number: int, settings: dict) -> None:
        faults = SimFaults.parse(self.faults, number)
        n, depth = int(settings["NUMFRAMESTOACQUIRE"]), int(settings["COUNTERDEPTH"])
        raw = int(settings["FILEFORMAT"]) == 2
        period = max(settings["ACQUISITIONPERIOD"], settings["ACQUISITIONTIME"]) * 1e-3
        soft = int(settings["TRIGGERSTART"]) == SOFT
        per = int(settings["NUMFRAMESPERTRIGGER"]) if soft else n
        self.log(f"acquisition {number}: {n} frames, {depth}-bit "
                 f"{'raw' if raw else 'binary'}, {'soft' if soft else 'internal'} trigger, "
                 f"period {period * 1e3:g} ms")  # fmt: skip
        conn, sent, t_start = self._wait_client(), 0, time.monotonic()
        try:
            header = headers.compose_acquisition_header(headers.default_acquisition_header(
                settings, chips=self.chips, when=datetime.now()))  # fmt: skip
            if conn is not None:
                conn.sendall(protocol.frame(header))
            first, lost = 1, False
            while first <= n and not self._stop.is_set() and not lost:
                if soft:
                    self._triggers.acquire()
                    if self._stop.is_set():
                        break
                last = min(n, first + per - 1)
                count, lost = self._series(conn, first, last, settings, faults, period)
                sent += count
                first = last + 1
        except OSError as exc:
            self.log(f"acquisition {number}: data client lost ({exc})")
        finally:
            wall = time.monotonic() - t_start
            self.sent = sent
            self.log(f"acquisition {number}: sent {sent} of {n} frames in {wall:.2f} s")
            self._acquiring.clear()

    def _series(self, conn, first, last, settings, faults, period) -> tuple[int, bool]:
        """Send frames ``first .. last`` (detector numbers) paced at ``period``: (the
        number sent (to ``conn``, or discarded without a client), whether ``--faults``
        closed the connection)."""
        depth, raw = int(settings["COUNTERDEPTH"]), int(settings["FILEFORMAT"]) == 2
        thresholds = tuple(float(settings[f"THRESHOLD{i}"]) for i in range(8))
        shutter = float(settings["ACQUISITIONTIME"]) * 1e-3
        payload = pixels.payload_bytes(depth, raw, self.chips)
        header = headers.make_frame_header(first, chips=self.chips, depth=depth, raw=raw,
                                            shutter_s=shutter, thresholds=thresholds,
                                            when=datetime.now())  # fmt: skip
        message = protocol.PREFIX_BYTES + header.header_bytes + payload
        block = max(1, min(BLOCK_BYTES // message, int(BLOCK_SECONDS / period) or 1))
        events = sorted({*faults.stall, faults.disconnect or 0, faults.truncate or 0} - {0})
        t0, sent, number = time.monotonic(), 0, first
        while number <= last and not self._stop.is_set():
            stop = min(last + 1, number + block, *(e for e in events if e > number))
            if number in faults.stall:
                time.sleep(faults.stall[number])
                t0 += faults.stall[number]
            if number == faults.disconnect and conn is not None:
                self.log(f"--faults: data connection closed before frame {number}")
                self._drop_client(conn)
                return sent, True
            delay = t0 + (stop - first) * period - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            numbers = np.array([i for i in range(number, stop) if i not in faults.drop])
            if len(numbers) and conn is not None:
                buf = self._messages(numbers, header, depth, raw, payload, faults)
                if number == faults.truncate:
                    conn.sendall(buf[0, : message // 2].tobytes())
                    self.log(f"--faults: frame {number} cut off after {message // 2} bytes")
                    self._drop_client(conn)
                    return sent, True
                conn.sendall(buf)
            sent += len(numbers)
            number = stop
        return sent, False

    def _reuse(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        """A uint8 buffer of ``shape`` kept from block to block (a fresh one each block
        costs its page faults: 4 MB a block, a third of the send time)."""
        have = self._buffers.get(name)
        if have is None or have.shape != shape:
            have = self._buffers[name] = np.empty(shape, np.uint8)
        return have

    def _messages(self, numbers, header, depth, raw, payload, faults) -> np.ndarray:
        """``(len(numbers), message bytes)``: prefix, MQ1 header and pixels per frame."""
        p, h = protocol.PREFIX_BYTES, header.header_bytes
        buf = self._reuse("messages", (len(numbers), p + h + payload))
        buf[:, :p] = np.frombuffer(protocol.frame(b"\0" * (h + payload))[:p], np.uint8)
        if numbers.max() < 10**6:
            # One header, its six-digit frame-number field (header bytes 4..9) patched.
            buf[:, p : p + h] = np.frombuffer(headers.compose_frame_header(header), np.uint8)
            digits = (numbers[:, None] // 10 ** np.arange(5, -1, -1)) % 10
            buf[:, p + 4 : p + 10] = (digits + ord("0")).astype(np.uint8)
        else:  # a longer number moves the other fields: compose each header
            for i, number in enumerate(numbers):
                head = headers.compose_frame_header(replace(header, number=int(number)))
                buf[i, p : p + h] = np.frombuffer(head, np.uint8)
        span = int(numbers[-1] - numbers[0]) + 1
        frames = self.frames(int(numbers[0]) - 1, span, depth)
        if span != len(numbers):  # frames dropped by --faults
            frames = frames[numbers - numbers[0]]
        packed = self._reuse("pixels", (len(numbers), payload))
        buf[:, p + h :] = pixels.pack_frames(frames, depth, raw, self.chips, out=packed)
        for i in np.flatnonzero(np.isin(numbers, list(faults.corrupt))):
            buf[i, p + 2] = ord("X")  # MQ1 -> MQX
        for i in np.flatnonzero(np.isin(numbers, list(faults.badlength))):
            digits = b"%010d" % (h + payload + 2)
            buf[i, 4:14] = np.frombuffer(digits, np.uint8)
        return buf
