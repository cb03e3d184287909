"""Real local network peers for tests: an SMTP sink and a webhook receiver.

Both listen on 127.0.0.1 on a free port, record what they receive, and can be told
how to answer (to exercise retries).  Use them as context managers or through the
``smtp_sink`` / ``webhook_sink`` pytest fixtures::

    from tests.peers import smtp_sink, webhook_sink  # in a conftest.py

They never contact anything themselves; everything stays on loopback.
"""

from __future__ import annotations

import email.policy
import hashlib
import hmac
import http.server
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

__all__ = [
    "ReceivedMessage",
    "RecordedRequest",
    "SmtpSink",
    "WebhookSink",
    "smtp_sink",
    "wait_until",
    "webhook_sink",
]

LOOPBACK = "127.0.0.1"


class _DropLoginDataNotice(logging.Filter):
    """aiosmtpd 1.4 logs a deprecation notice on every AUTH that the sink cannot avoid."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Session.login_data is deprecated" not in record.getMessage()


_aiosmtpd_log = logging.getLogger("mail.log")
if not any(isinstance(f, _DropLoginDataNotice) for f in _aiosmtpd_log.filters):
    _aiosmtpd_log.addFilter(_DropLoginDataNotice())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _wait(condition: threading.Condition, ready: Callable[[], bool], timeout: float, what: str) -> None:
    with condition:
        if not condition.wait_for(ready, timeout=timeout):
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------------------
# SMTP
# ---------------------------------------------------------------------------


class ReceivedMessage(EmailMessage):
    """A parsed message plus its SMTP envelope (``envelope_from``, ``envelope_to``, ``raw``)."""

    envelope_from: str
    envelope_to: list[str]
    raw: bytes


class _SmtpHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address.lower() in self.sink.reject_recipients:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return self.sink._receive(envelope)


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that keeps every message it accepts.

    ``replies`` are the answers to successive DATA commands (the last one repeats),
    e.g. ``["451 4.3.0 Try again later", "250 OK"]``; ``reject_recipients`` get a
    550 at RCPT; with ``auth={"user": "password"}`` AUTH PLAIN/LOGIN is offered
    (without TLS, which is fine on loopback).
    """

    def __init__(
        self,
        *,
        replies: Sequence[str] = ("250 OK",),
        reject_recipients: Sequence[str] = (),
        auth: dict[str, str] | None = None,
    ) -> None:
        self.replies = list(replies)
        self.reject_recipients = {address.lower() for address in reject_recipients}
        self.auth = auth
        self.logins: list[str] = []
        self.messages: list[ReceivedMessage] = []
        self.host = LOOPBACK
        self.port = 0
        self._data_commands = 0
        self._condition = threading.Condition()
        self._controller: Controller | None = None

    def set_replies(self, *replies: str) -> None:
        with self._condition:
            self.replies = list(replies)
            self._data_commands = 0

    def _receive(self, envelope: Any) -> str:
        with self._condition:
            reply = self.replies[min(self._data_commands, len(self.replies) - 1)]
            self._data_commands += 1
            if reply.startswith("250"):
                raw = bytes(envelope.original_content or envelope.content)
                message = BytesParser(_class=ReceivedMessage, policy=email.policy.default).parsebytes(raw)
                assert isinstance(message, ReceivedMessage)
                message.envelope_from = envelope.mail_from
                message.envelope_to = list(envelope.rcpt_tos)
                message.raw = raw
                self.messages.append(message)
                self._condition.notify_all()
            return reply

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if self.auth and isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode("utf-8", "replace")
            if hmac.compare_digest(self.auth.get(user, "\0").encode(), auth_data.password):
                self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> SmtpSink:
        last_error: Exception | None = None
        for _ in range(5):
            controller = Controller(
                _SmtpHandler(self),
                hostname=LOOPBACK,
                port=_free_port(),
                server_hostname="localhost",  # avoids socket.getfqdn(), i.e. a DNS lookup
                ready_timeout=5.0,
                auth_require_tls=False,
                authenticator=self._authenticate if self.auth else None,
            )
            try:
                controller.start()
            except Exception as exc:  # the free port was taken meanwhile: try another
                last_error = exc
                if not controller.loop.is_closed():
                    controller.loop.close()
                continue
            self._controller = controller
            self.port = controller.port
            return self
        raise RuntimeError(f"could not start SMTP sink: {last_error}")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, n: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least ``n`` messages arrived; AssertionError on timeout."""
        _wait(self._condition, lambda: len(self.messages) >= n, timeout, f"{n} message(s)")
        return list(self.messages)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# Webhooks
# ---------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: Message  # case-insensitive: headers["x-formwork-signature"]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def verify(self, secret: str, header: str = "X-Formwork-Signature") -> bool:
        """Check the ``sha256=<hex>`` HMAC header against the raw body, as a receiver would."""
        received = self.headers.get(header, "")
        expected = "sha256=" + hmac.new(secret.encode("utf-8"), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(received.encode(), expected.encode())


Response = int | tuple[int, str] | tuple[int, str, dict[str, str]]


@dataclass
class _Plan:
    responses: list[Response] = field(default_factory=lambda: [200])
    delay: float = 0.0
    served: int = 0


class _WebhookServer(http.server.ThreadingHTTPServer):
    # Non-daemon handler threads are joined in server_close(), so nothing outlives a test.
    daemon_threads = False
    block_on_close = True

    def __init__(self, sink: WebhookSink) -> None:
        self.sink = sink
        self.stopping = threading.Event()
        super().__init__((LOOPBACK, 0), _WebhookHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(); skip it so no lookup leaves the host.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (timeout tests) make writes fail; that is expected.
        pass


class _WebhookHandler(http.server.BaseHTTPRequestHandler):
    server: _WebhookServer
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, text, extra = self.server.sink._record(
            RecordedRequest(self.command, self.path, self.headers, body)
        )
        if delay := self.server.sink.plan.delay:
            self.server.stopping.wait(delay)
        payload = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


class WebhookSink:
    """An HTTP server on 127.0.0.1 that records requests and answers from a plan.

    ``responses`` are used in order, the last one repeating: an int status, or
    ``(status, body)``, or ``(status, body, headers)``, e.g. ``[503, 200]`` or
    ``[(302, "", {"Location": "http://127.0.0.1:1/"})]``.  ``delay`` seconds are
    waited before answering (for timeout tests; cut short when the sink stops).
    """

    def __init__(self, *, responses: Sequence[Response] = (200,), delay: float = 0.0) -> None:
        self.plan = _Plan(list(responses) or [200], delay)
        self.requests: list[RecordedRequest] = []
        self._condition = threading.Condition()
        self._server: _WebhookServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/hook"

    def set_responses(self, *responses: Response, delay: float | None = None) -> None:
        with self._condition:
            self.plan = _Plan(list(responses) or [200], self.plan.delay if delay is None else delay)

    def _record(self, request: RecordedRequest) -> tuple[int, str, dict[str, str]]:
        with self._condition:
            self.requests.append(request)
            plan = self.plan
            response = plan.responses[min(plan.served, len(plan.responses) - 1)]
            plan.served += 1
            self._condition.notify_all()
        if isinstance(response, int):
            return response, "ok" if 200 <= response < 300 else "error", {}
        if len(response) == 2:
            return response[0], response[1], {}
        return response  # type: ignore[return-value]

    def verify(self, secret: str) -> bool:
        """True when there are requests and every one carries a valid signature."""
        return bool(self.requests) and all(request.verify(secret) for request in self.requests)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests arrived; AssertionError on timeout."""
        _wait(self._condition, lambda: len(self.requests) >= n, timeout, f"{n} request(s)")
        return list(self.requests)

    def start(self) -> WebhookSink:
        self._server = _WebhookServer(self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> WebhookSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A running SmtpSink accepting all mail; reconfigure with ``set_replies``."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    """A running WebhookSink answering 200; reconfigure with ``set_responses``."""
    with WebhookSink() as sink:
        yield sink


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> None:
    """Poll ``predicate`` until it is true; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
