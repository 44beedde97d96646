"""Notifications: events from documents, severity filters, rate limits, and the sinks
against real local servers (an HTTP server for the webhook, aiosmtpd for e-mail)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from bluestem.notify import Event, LogFileSink, Notifier, Severity, SmtpSink, WebhookSink


class Memory:
    """A sink double: keeps what it is given (the filters are Sink's, tested below)."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)


def _run(notifier, *, status="success", dropped=(0, 0), reason=""):
    notifier("start", {"uid": "run-0001-aaaa", "plan_name": "raster"})
    notifier("descriptor", {"uid": "d1", "run_start": "run-0001-aaaa",
                            "name": "det_hdf_dropped_frames_monitor"})  # fmt: skip
    for i, n in enumerate(dropped):
        notifier("event", {"descriptor": "d1", "seq_num": i + 1,
                           "data": {"det_hdf_dropped_frames": n}})  # fmt: skip
    notifier("stop", {"run_start": "run-0001-aaaa", "exit_status": status, "reason": reason})


def test_documents_become_events():
    memory = Memory()
    notifier = Notifier([memory], dropped_frames=10)
    _run(notifier, dropped=(0, 5))  # below the threshold, a success: nothing
    assert memory.events == []
    _run(notifier, status="fail", dropped=(0, 12, 40), reason="det: lost the detector IOC")
    dropped, failed = memory.events
    assert dropped.kind == "dropped_frames" and dropped.severity == Severity.WARNING
    assert "12 frames dropped (threshold 10)" in dropped.message  # once per run
    assert failed.kind == "run_failed" and failed.severity == Severity.ERROR
    assert failed.message == "raster run-0001 fail: det: lost the detector IOC"
    _run(notifier, status="abort", reason="aborted by the operator")
    assert memory.events[-1].kind == "run_aborted"
    assert memory.events[-1].severity == Severity.WARNING


def test_a_broken_document_never_raises():
    notifier = Notifier([Memory()])
    notifier("event", {"no": "descriptor"})  # logged, not raised


def test_severity_filter_and_rate_limit(tmp_path):
    sink = LogFileSink(tmp_path / "n.log", min_severity="warning", per_hour=2)
    info = Event("x", Severity.INFO, "fine")
    assert not sink(info)
    for i in range(5):
        sink(Event("run_failed", Severity.ERROR, f"failure {i}"))
    assert sink.sent == 2 and sink.held_back == 3
    lines = (tmp_path / "n.log").read_text().splitlines()
    assert len(lines) == 2 and "ERROR run_failed: failure 0" in lines[0]
    sink._times.clear()  # an hour later
    sink(Event("run_failed", Severity.ERROR, "failure 5"))
    last = (tmp_path / "n.log").read_text().splitlines()[-1]
    assert "failure 5 (3 earlier notification(s) held back by the rate limit)" in last


def test_log_file_rotates(tmp_path):
    sink = LogFileSink(tmp_path / "n.log", max_bytes=300, backups=2)
    for i in range(20):
        sink(Event("x", Severity.WARNING, f"event {i:02d} " + "y" * 40))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["n.log", "n.log.1", "n.log.2"]
    assert "event 19" in (tmp_path / "n.log").read_text()


@pytest.fixture
def http_server():
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.headers["Content-Type"], json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got
    server.shutdown()


def test_webhook_posts_json_to_a_real_server(http_server):
    url, got = http_server
    sink = WebhookSink(url, min_severity="error")
    assert sink(Event("run_failed", Severity.ERROR, "raster abc fail", details={"run": "abc"}))
    ((ctype, body),) = got
    assert ctype == "application/json"
    assert body["kind"] == "run_failed" and body["severity"] == "error"
    assert body["details"] == {"run": "abc"} and body["held_back"] == 0


def test_a_sink_that_fails_reports_and_never_raises(caplog):
    sink = WebhookSink("http://127.0.0.1:9/nothing-listens", timeout=1.0)
    assert not sink(Event("run_failed", Severity.ERROR, "x"))
    assert sink.failures == 1 and "notification to webhook failed" in caplog.text


def test_email_reaches_a_real_smtp_server():
    from aiosmtpd.controller import Controller

    class Keep:
        def __init__(self):
            self.mails = []

        async def handle_DATA(self, server, session, envelope):
            self.mails.append(envelope)
            return "250 OK"

    keep = Keep()
    with socket.socket() as probe:  # a free loopback port (aiosmtpd cannot take 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(keep, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        sink = SmtpSink("127.0.0.1", port, sender="bluestem@lab.example",
                        to=["operator@lab.example"])  # fmt: skip
        assert sink(Event("run_failed", Severity.ERROR, "raster abc fail: disk full"))
    finally:
        controller.stop()
    (mail,) = keep.mails
    assert mail.rcpt_tos == ["operator@lab.example"]
    text = mail.content.decode()
    assert "Subject: [bluestem] ERROR run_failed: raster abc fail: disk full" in text


@pytest.mark.parametrize(
    "config, expect",
    [
        ({"mail": {}}, "unknown key(s) ['mail']"),
        ({"webhook": "ftp://x"}, "webhook.url='ftp://x': allowed an http"),
        ({"smtp": {"host": "h", "sender": "me", "to": "a@b"}}, "smtp.sender='me'"),
        ({"smtp": {"host": "h", "sender": "a@b", "to": []}}, "smtp.to=[]"),
        ({"log": {"path": "/tmp/x.log", "min_severity": "loud"}},
         "log.min_severity='loud': allowed one of info, warning, error, critical"),
        ({"log": {"path": "/tmp/x.log", "per_hour": -1}}, "log.per_hour=-1"),
        ({"dropped_frames": -3}, "notify.dropped_frames=-3"),
        ({"webhook": {"url": "http://x", "colour": 1}}, "notify.webhook:"),
    ],
)  # fmt: skip
def test_bad_config_is_refused_naming_it(config, expect):
    with pytest.raises(ValueError) as info:
        Notifier.from_config(config)
    assert expect in str(info.value)


def test_from_config_builds_the_sinks(tmp_path):
    n = Notifier.from_config({"log": str(tmp_path / "a.log"), "webhook": "http://127.0.0.1:1/x",
                              "dropped_frames": 5})  # fmt: skip
    assert [type(s).__name__ for s in n.sinks] == ["LogFileSink", "WebhookSink"]
    assert n.dropped_frames == 5
    n.close()
