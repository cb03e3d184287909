"""Side effects of automation actions: sending email and calling webhooks.

Every failure is a :class:`DeliveryError` whose ``retryable`` flag tells the
worker whether trying again later can help (timeouts, 5xx, 429, temporary SMTP
codes) or not (bad addresses, redirects, refused destinations, other 4xx).

Webhook URLs are user input, so :func:`call_webhook` guards against SSRF: every
address the host resolves to must be public, and the connection is made to the
vetted address (defeating DNS rebinding) while the original host name is still
used for the ``Host`` header, TLS SNI and certificate checks.  No proxy from the
environment is used and redirects are never followed.
"""

from __future__ import annotations

import datetime as dt
import decimal
import email.policy
import email.utils
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import random
import re
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

__all__ = [
    "DeliveryError",
    "SmtpSettings",
    "WebhookResult",
    "backoff_delay",
    "call_webhook",
    "encode_payload",
    "message_id_for",
    "private_url_problem",
    "resolve_public_addresses",
    "send_email",
    "sign_body",
]

log = logging.getLogger(__name__)

USER_AGENT = "Formwork-Webhook/1"
SIGNATURE_HEADER = "X-Formwork-Signature"
IDEMPOTENCY_HEADER = "X-Formwork-Idempotency-Key"
MAX_RECIPIENTS = 100
MAX_URL_CHARS = 2048
_MAX_KEY_CHARS = 200

# 7bit transfer encoding: UTF-8 bodies go out as quoted-printable/base64, so they survive
# servers without 8BITMIME; CRLF line endings as SMTP requires.
_MAIL_POLICY = email.policy.SMTP.clone(cte_type="7bit")

_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$)({_LABEL})(\.{_LABEL})*$")
_NAMED_ADDRESS = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]*)>\s*$")
_KEY = re.compile(r"^[\x20-\x7e]+\Z")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\s]")


class DeliveryError(Exception):
    """A failed delivery; ``retryable`` says whether a later attempt may succeed."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


@dataclass
class SmtpSettings:
    """How to reach the outgoing mail server; ``tls`` is "none", "starttls" or "ssl"."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: str
    mail_from: str
    timeout: float = 10
    helo_name: str | None = None  # EHLO name; None lets smtplib use this machine's FQDN


@dataclass(frozen=True)
class WebhookResult:
    status: int
    body: str


# ---------------------------------------------------------------------------
# Email
# ---------------------------------------------------------------------------


def _refuse_control_chars(value: str, what: str) -> None:
    """Any line break the email package splits on (\\x85, \\u2028 ... too) or control character but tab."""
    if len(value.splitlines()) > 1 or any(ch != "\t" and (ch < " " or "\x7f" <= ch <= "\x9f") for ch in value):
        raise DeliveryError(f"{what} must not contain line breaks or control characters", retryable=False)


def _parse_address(raw: object, what: str) -> Address:
    """Accept ``user@example.com`` or ``Name <user@example.com>`` (ASCII address part)."""
    if not isinstance(raw, str) or not raw.strip():
        raise DeliveryError(f"{what} is empty or not text", retryable=False)
    _refuse_control_chars(raw, what)
    match = _NAMED_ADDRESS.match(raw)
    name, addr = (match["name"].strip().strip('"'), match["addr"].strip()) if match else ("", raw.strip())
    local, sep, domain = addr.rpartition("@")
    if not sep or len(addr) > 254 or len(local) > 64 or not _LOCAL_PART.match(local) or not _DOMAIN.match(domain):
        raise DeliveryError(f"{what} {raw[:100]!r} is not a valid email address", retryable=False)
    try:
        return Address(display_name=name, username=local, domain=domain)
    except (ValueError, TypeError) as exc:
        raise DeliveryError(f"{what} {raw[:100]!r} is not a valid email address: {exc}", retryable=False) from None


def _check_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str)
        or len(idempotency_key) > _MAX_KEY_CHARS
        or not _KEY.match(idempotency_key)
    ):
        raise DeliveryError(
            f"Idempotency key must be 1-{_MAX_KEY_CHARS} printable ASCII characters", retryable=False
        )


def message_id_for(idempotency_key: str, domain: str) -> str:
    """Stable Message-ID for a key, so receiving systems can drop duplicates of a retry."""
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:40]
    return f"<formwork.{digest}@{domain}>"


def _build_message(
    settings: SmtpSettings,
    to: list[str],
    subject: str,
    body_text: str,
    body_html: str | None,
    idempotency_key: str | None,
    cc: list[str] | None,
) -> tuple[EmailMessage, Address, list[Address]]:
    if isinstance(to, str) or isinstance(cc, str):
        raise DeliveryError("Recipients must be a list of addresses", retryable=False)
    sender = _parse_address(settings.mail_from, "Sender address")
    to_addrs = [_parse_address(a, "Recipient address") for a in to or []]
    cc_addrs = [_parse_address(a, "Cc address") for a in cc or []]
    if not to_addrs:
        raise DeliveryError("Email has no recipients", retryable=False)
    if len(to_addrs) + len(cc_addrs) > MAX_RECIPIENTS:
        raise DeliveryError(f"Email has more than {MAX_RECIPIENTS} recipients", retryable=False)
    if not isinstance(subject, str):
        raise DeliveryError("Subject must be text", retryable=False)
    _refuse_control_chars(subject, "Subject")
    _check_key(idempotency_key)

    msg = EmailMessage(policy=_MAIL_POLICY)
    msg["From"] = sender
    msg["To"] = to_addrs
    if cc_addrs:
        msg["Cc"] = cc_addrs
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(usegmt=True)
    if idempotency_key is not None:
        msg["Message-ID"] = message_id_for(idempotency_key, sender.domain)
        msg[IDEMPOTENCY_HEADER] = idempotency_key
    else:
        msg["Message-ID"] = email.utils.make_msgid(domain=sender.domain)
    # RFC 3834: tells auto-responders not to answer, preventing mail loops with rules.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body_text or "")
    if body_html is not None:
        msg.add_alternative(body_html, subtype="html")
    return msg, sender, to_addrs + cc_addrs


if TYPE_CHECKING:
    _SMTPBase = smtplib.SMTP  # what the mixin's super() calls reach
else:
    _SMTPBase = object


class _WrittenHook(_SMTPBase):
    """Calls ``on_written`` once the message body's final "." has been handed to the server.

    From that moment the server may have the message even if this process dies before reading
    its answer; the worker records that point so a restart does not send the message again.
    """

    on_written: Callable[[], None] | None = None
    _in_data = False

    def data(self, msg: Any) -> tuple[int, bytes]:
        self._in_data = True
        try:
            return super().data(msg)
        finally:
            self._in_data = False

    def send(self, s: Any) -> None:
        super().send(s)
        if self._in_data and self.on_written is not None and isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            callback, self.on_written = self.on_written, None
            callback()


class _SMTP(_WrittenHook, smtplib.SMTP):
    pass


class _SMTPSSL(_WrittenHook, smtplib.SMTP_SSL):
    pass


def _smtp_code_error(prefix: str, code: int, detail: object) -> DeliveryError:
    text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    return DeliveryError(f"{prefix} ({code} {text[:200]})", retryable=400 <= code < 500, status=code)


def _quit_quietly(client: smtplib.SMTP) -> None:
    """QUIT after the message is accepted; a failure here must not trigger a resend."""
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def send_email(
    settings: SmtpSettings,
    to: list[str],
    subject: str,
    body_text: str,
    *,
    body_html: str | None = None,
    idempotency_key: str | None = None,
    cc: list[str] | None = None,
    on_written: Callable[[], None] | None = None,
) -> str:
    """Send one email over SMTP and return its Message-ID.

    With an ``idempotency_key`` the Message-ID is derived from the key and the key
    is sent in ``X-Formwork-Idempotency-Key``, so a retried delivery can be
    recognised as the same message.  ``on_written`` is called once the whole message
    has been handed to the server, before its answer is read.
    """
    msg, sender, recipients = _build_message(settings, to, subject, body_text, body_html, idempotency_key, cc)
    envelope_to = list(dict.fromkeys(a.addr_spec for a in recipients))
    tls = (settings.tls or "none").lower()
    if tls not in ("none", "starttls", "ssl"):
        raise DeliveryError(f"Unknown SMTP TLS mode {settings.tls!r}", retryable=False)
    context = ssl.create_default_context()
    client: _SMTP | _SMTPSSL | None = None
    sent = False
    try:
        if tls == "ssl":
            client = _SMTPSSL(
                settings.host, settings.port, settings.helo_name, timeout=settings.timeout, context=context
            )
        else:
            client = _SMTP(settings.host, settings.port, settings.helo_name, timeout=settings.timeout)
        if tls == "starttls":
            client.starttls(context=context)
        if settings.username:
            client.login(settings.username, settings.password or "")
        client.on_written = on_written
        refused = client.sendmail(sender.addr_spec, envelope_to, msg.as_bytes())
        sent = True
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        retryable = bool(codes) and all(400 <= code < 500 for code in codes)
        raise DeliveryError(
            f"Mail server refused all recipients: {', '.join(exc.recipients)}", retryable=retryable
        ) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"SMTP login failed ({exc.smtp_code})", retryable=False, status=exc.smtp_code) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"Mail server does not support a required feature: {exc}", retryable=False) from None
    except smtplib.SMTPServerDisconnected as exc:
        raise DeliveryError(f"Mail server closed the connection: {exc}", retryable=True) from None
    except smtplib.SMTPResponseException as exc:
        raise _smtp_code_error("Mail server refused the message", exc.smtp_code, exc.smtp_error) from None
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(f"Mail server certificate is not valid: {exc.verify_message}", retryable=False) from None
    except TimeoutError:
        raise DeliveryError(f"Mail server did not answer within {settings.timeout:g}s", retryable=True) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"Could not reach mail server: {exc}", retryable=True) from None
    finally:
        if client is not None and sent:
            _quit_quietly(client)
        elif client is not None:
            client.close()
    if refused:
        log.warning("mail %s: some recipients were refused: %s", msg["Message-ID"], sorted(refused))
    return str(msg["Message-ID"])


# ---------------------------------------------------------------------------
# Webhooks
# ---------------------------------------------------------------------------


def sign_body(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC>`` of exactly the bytes sent, for the receiver to verify."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)  # a string keeps money amounts exact
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode_payload(payload: object) -> bytes:
    """Compact UTF-8 JSON; dates become ISO strings and Decimals exact strings."""
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise DeliveryError(f"Webhook payload is not valid JSON: {exc}", retryable=False) from None
    return text.encode("utf-8")


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _is_forbidden_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and _is_forbidden_ip(embedded):
            return True
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


_LEGACY_IPV4 = re.compile(r"^[0-9a-fA-FxX.]+$")


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP written in the URL, including legacy IPv4 forms like ``2130706433`` or ``127.1``."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def private_url_problem(url: str) -> str | None:
    """Why a webhook URL written by a user points at a non-public host (an IP literal or a ``localhost``
    name), or None. Checked when a rule is saved; names that only resolve to private addresses are
    refused when the call is made (:func:`resolve_public_addresses`)."""
    try:
        host = (urlsplit(url.strip()).hostname or "").rstrip(".").lower()
    except ValueError:
        return None
    if not host:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"'{host}' is this server itself"
    literal = _ip_literal(host)
    if literal is not None and _is_forbidden_ip(literal):
        return f"{literal} is a private, loopback or reserved address"
    return None


def resolve_public_addresses(host: str, port: int, *, allow_private: bool = False) -> list[str]:
    """Resolve ``host`` and vet every address; refuse if any of them is not public.

    IP literals are checked without any lookup, so refusing them sends no traffic.
    """
    literal = _ip_literal(host)
    if literal is not None:
        candidates = [str(literal)]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            temporary = exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None))
            raise DeliveryError(f"Could not resolve webhook host {host!r}: {exc.strerror}",
                                retryable=temporary) from None
        candidates = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not candidates:
            raise DeliveryError(f"Webhook host {host!r} has no addresses", retryable=True)
    if not allow_private:
        for candidate in candidates:
            ip = ipaddress.ip_address(candidate.split("%", 1)[0])
            if _is_forbidden_ip(ip):
                raise DeliveryError(
                    f"Webhook host {host!r} resolves to a non-public address ({ip}); refused",
                    retryable=False,
                )
    return candidates


def _connect_any(addresses: list[str], port: int, timeout: float | None) -> socket.socket:
    """Connect to the first reachable vetted address (never to a fresh DNS answer)."""
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    assert error is not None
    raise error


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP connection to vetted IPs while keeping the original Host header."""

    def __init__(self, host: str, port: int, *, addresses: list[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.pinned_addresses = addresses

    def connect(self) -> None:
        self.sock = _connect_any(self.pinned_addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS connection to vetted IPs; SNI and certificate checks use the host name."""

    def __init__(
        self, host: str, port: int, *, addresses: list[str], timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.pinned_addresses = addresses
        self.tls_context = context

    def connect(self) -> None:
        sock = _connect_any(self.pinned_addresses, self.port, self.timeout)
        try:
            self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _parse_retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def _read_capped(response: http.client.HTTPResponse, limit: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    remaining = max(limit, 0)
    while remaining > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("response body took too long")
        chunk = response.read(min(65536, remaining))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def call_webhook(
    url: str,
    payload: object,
    *,
    secret: str | None,
    idempotency_key: str | None,
    timeout: float = 10,
    allow_private: bool = False,
    max_response_bytes: int = 1_000_000,
    on_written: Callable[[], None] | None = None,
) -> WebhookResult:
    """POST ``payload`` as JSON to ``url`` and return the 2xx response (body capped).

    Raises DeliveryError: non-retryable for bad URLs, refused destinations,
    redirects and 4xx (except 429); retryable for timeouts, connection errors,
    429 and 5xx.  ``timeout`` bounds each network step and the body read overall.
    ``on_written`` is called once the request has been sent, before the response is awaited.
    """
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS or _URL_FORBIDDEN.search(url):
        raise DeliveryError("Webhook URL is not valid", retryable=False)
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise DeliveryError(f"Webhook URL is not valid: {exc}", retryable=False) from None
    if scheme not in ("http", "https"):
        raise DeliveryError("Webhook URL must start with http:// or https://", retryable=False)
    if not host:
        raise DeliveryError("Webhook URL has no host", retryable=False)
    if parts.username is not None or parts.password is not None:
        raise DeliveryError("Webhook URL must not contain credentials; use a secret instead", retryable=False)
    _check_key(idempotency_key)
    body = encode_payload(payload)

    addresses = resolve_public_addresses(host, port, allow_private=allow_private)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Accept": "*/*"}
    if secret:
        headers[SIGNATURE_HEADER] = sign_body(secret, body)
    if idempotency_key is not None:
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    # Percent-encode non-ASCII in path/query; existing escapes and delimiters are kept.
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe="/?&=%:@!$'()*+,;~[]")

    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = _PinnedHTTPSConnection(
            host, port, addresses=addresses, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = _PinnedHTTPConnection(host, port, addresses=addresses, timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        conn.request("POST", target, body=body, headers=headers)
        if on_written is not None:
            on_written()
        response = conn.getresponse()
        status = response.status
        raw = _read_capped(response, max_response_bytes, deadline)
        location = response.getheader("Location")
        retry_after = _parse_retry_after(response.getheader("Retry-After"))
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(f"Webhook certificate is not valid: {exc.verify_message}", retryable=False) from None
    except TimeoutError:
        raise DeliveryError(f"Webhook did not answer within {timeout:g}s", retryable=True) from None
    except ValueError as exc:
        raise DeliveryError(f"Webhook request is not valid: {exc}", retryable=False) from None
    except (http.client.HTTPException, OSError) as exc:
        raise DeliveryError(f"Could not reach webhook: {exc or type(exc).__name__}", retryable=True) from None
    finally:
        conn.close()

    text = raw.decode("utf-8", "replace")
    if 200 <= status < 300:
        return WebhookResult(status=status, body=text)
    if 300 <= status < 400:
        raise DeliveryError(
            f"Webhook answered with a redirect ({status}) to {(location or '?')[:200]}; redirects are not followed",
            retryable=False,
            status=status,
        )
    retryable = status == 429 or status >= 500
    raise DeliveryError(
        f"Webhook answered {status}: {text[:200]}", retryable=retryable, status=status, retry_after=retry_after
    )


def backoff_delay(attempt: int, base: float = 30, cap: float = 3600) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    Exponential (base, 2*base, 4*base, ...) capped at ``cap``, with "equal jitter":
    a random value in [d/2, d] so retries from many rules spread out yet never
    come back immediately.
    """
    exponent = min(max(int(attempt), 1) - 1, 60)
    delay = min(float(cap), float(base) * (2**exponent))
    return delay / 2 + random.uniform(0, delay / 2)

