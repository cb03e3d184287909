"""Unit tests for automation templating, delivery (against real local peers) and schedules.

All network traffic stays on 127.0.0.1; destinations that must be refused are
checked with the socket layer patched to fail loudly, proving nothing is sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import socket
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.headerregistry import Address

import pytest

from formwork.automation.delivery import (
    DeliveryError,
    SmtpSettings,
    WebhookResult,
    backoff_delay,
    call_webhook,
    send_email,
    sign_body,
)
from formwork.automation.schedule import ScheduleError, due_firings, parse_schedule
from formwork.automation.templating import (
    MAX_TEMPLATE_CHARS,
    TemplateError,
    render_template,
    render_value,
    validate_template,
)
from tests import peers
from tests.peers import SmtpSink, WebhookSink

# The fixtures also work when a conftest imports them; binding them here keeps this file self-contained.
smtp_sink = peers.smtp_sink
webhook_sink = peers.webhook_sink

RECORD = {
    "id": 7,
    "title": "年度合同",
    "amount": Decimal("1234567.5"),
    "due": dt.date(2024, 3, 5),
    "phone": None,
    "tags": ["vip", "华东"],
    "owner": {"id": 2, "name": "Li Lei", "email": "li@example.com"},
}
CONTEXT: dict[str, object] = {"record": RECORD, "user": {"name": "韩梅梅"}}


# ---------------------------------------------------------------------------
# Templating
# ---------------------------------------------------------------------------

SSTI_PAYLOADS = [
    "{{ record.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ config.items() }}",
    "{{ self }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ request.application.__globals__.__builtins__ }}",
    "{{ url_for.__globals__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ record['__class__'] }}",
    "{{ (1).__class__.__base__ }}",
    "{{ record.get.__self__ }}",
    "{{ '{0.__class__}'.format(record) }}",
    "{{ '%s' % record }}",
    "{{ record.tags.append(1) }}",
    "{{ record.owner.update({'x': 1}) }}",
    "{{ record.tags|map(attribute='__class__')|list }}",
    "{{ record.tags|sort(attribute='__class__') }}",
    "{{ range.__call__ }}",
    "{{ record.get }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{% macro m() %}{{ caller() }}{% endmacro %}",
    "{% include '/etc/passwd' %}",
    "{% extends 'base.html' %}",
    "{% import 'x' as x %}",
]


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_sandbox_refuses_known_ssti_payloads(payload: str) -> None:
    with pytest.raises(TemplateError) as info:
        render_template(payload, CONTEXT)
    assert "<" not in info.value.message  # no repr of Python objects leaks out


def test_render_chinese_text_and_filters() -> None:
    text = render_template(
        "{{ user.name }}您好：{{ record.owner.name }} 的合同《{{ record.title }}》金额 {{ record.amount|money('¥') }}，"
        "到期 {{ record.due|date('%Y年%m月%d日') }}，电话 {{ record.phone|default('未填写') }}，"
        "标签 {{ record.tags|join('、') }}{{ record.missing.deep }}",
        CONTEXT,
    )
    assert text == (
        "韩梅梅您好：Li Lei 的合同《年度合同》金额 ¥1,234,567.50，到期 2024年03月05日，电话 未填写，标签 vip、华东"
    )


def test_missing_attributes_and_none_render_empty_but_unknown_names_fail() -> None:
    assert render_template("[{{ record.nope }}|{{ record.phone }}|{{ record.owner.x.y }}]", CONTEXT) == "[||]"
    with pytest.raises(TemplateError, match="Unknown name 'recrod'"):
        render_template("{{ recrod.title }}", CONTEXT)


def test_filters() -> None:
    assert render_template("{{ -1234.005|money }} {{ 0|money }} {{ '12'|money }}", {}) == "-1,234.01 0.00 12.00"
    when = {"when": "2024-01-02T03:04:00+00:00"}
    assert render_template("{{ when|date('%H:%M', tz='Asia/Shanghai') }}", when) == "11:04"
    assert render_template("{{ ''|default('x', true) }}{{ 'y'|default('x') }}", {}) == "xy"
    with pytest.raises(TemplateError, match="money"):
        render_template("{{ 'abc'|money }}", {})


def test_validate_template_reports_syntax_errors_with_line() -> None:
    validate_template("Hello {{ record.title }}")
    with pytest.raises(TemplateError, match="Line 2"):
        validate_template("ok\n{{ record.title ")
    with pytest.raises(TemplateError, match="No filter named"):
        validate_template("{{ record.title|nonsense }}")
    with pytest.raises(TemplateError, match="Unknown name 'x'"):
        validate_template("{{ x }}", names=["record"])


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'a' * 10**7 }}",
        "{{ 10**100000 }}",
        "{{ range(10**9)|list }}",
        "{% for i in range(100000) %}{{ 'x' * 20 }}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'ab'|replace('a', 'x' * 100000)|replace('x', 'y' * 100000) }}",
        "{{ range(100000)|join('z' * 100) }}",
        "{{ record.title.center(1000000000) }}",
        "{% set a %}x{% endset %}",
    ],
)
def test_expensive_constructs_are_refused_quickly(template: str) -> None:
    start = time.monotonic()
    with pytest.raises(TemplateError):
        render_template(template, CONTEXT)
    assert time.monotonic() - start < 2.5


def test_template_length_is_limited() -> None:
    with pytest.raises(TemplateError, match="longer than"):
        validate_template("x" * (MAX_TEMPLATE_CHARS + 1))


def test_render_value_preserves_types() -> None:
    payload = {
        "id": "{{ record.id }}",
        "amount": "{{ record.amount }}",
        "phone": "{{ record.phone }}",
        "missing": "{{ record.nope }}",
        "owner": "{{ record.owner }}",
        "next": "{{ record.id + 1 }}",
        "label": "#{{ record.id }} {{ record.title }}",
        "items": ["{{ record.tags }}", 3, None, True],
        "nested": {"title": "{{ record.title ~ '!' }}"},
    }
    assert render_value(payload, CONTEXT) == {
        "id": 7,
        "amount": Decimal("1234567.5"),
        "phone": None,
        "missing": None,
        "owner": RECORD["owner"],
        "next": 8,
        "label": "#7 年度合同",
        "items": [["vip", "华东"], 3, None, True],
        "nested": {"title": "年度合同!"},
    }
    with pytest.raises(TemplateError):
        render_value({"x": "{{ record.__class__ }}"}, CONTEXT)


# ---------------------------------------------------------------------------
# Email (real aiosmtpd sink)
# ---------------------------------------------------------------------------


def _settings(sink: SmtpSink, **overrides: object) -> SmtpSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": sink.port,
        "username": None,
        "password": None,
        "tls": "none",
        "mail_from": "Formwork 通知 <noreply@example.com>",
        "timeout": 5,
        "helo_name": "localhost",
    }
    values.update(overrides)
    return SmtpSettings(**values)  # type: ignore[arg-type]


def test_email_delivered_with_utf8_and_idempotency(smtp_sink: SmtpSink) -> None:
    subject = "合同《年度合同》已签署 ✓"
    message_id = send_email(
        _settings(smtp_sink),
        ["李雷 <li@example.com>"],
        subject,
        "你好，李雷！\n金额：¥1,234.50",
        body_html="<p>你好</p>",
        idempotency_key="rule:1:2024-05-10T01:00:00+00:00",
        cc=["boss@example.com"],
    )
    (received,) = smtp_sink.wait_for(1)
    assert received["Subject"] == subject
    assert received["Message-ID"] == message_id
    assert received["X-Formwork-Idempotency-Key"] == "rule:1:2024-05-10T01:00:00+00:00"
    assert received["To"].addresses[0] == Address("李雷", "li", "example.com")
    assert received.envelope_from == "noreply@example.com"
    assert received.envelope_to == ["li@example.com", "boss@example.com"]
    assert received.get_body(("plain",)).get_content().replace("\r\n", "\n").rstrip() == "你好，李雷！\n金额：¥1,234.50"
    assert received.get_body(("html",)).get_content().strip() == "<p>你好</p>"
    assert max(received.raw) < 128  # 7-bit clean on the wire

    again = send_email(_settings(smtp_sink), ["li@example.com"], "x", "y",
                       idempotency_key="rule:1:2024-05-10T01:00:00+00:00")
    other = send_email(_settings(smtp_sink), ["li@example.com"], "x", "y",
                       idempotency_key="rule:1:2024-05-11T01:00:00+00:00")
    plain = send_email(_settings(smtp_sink), ["li@example.com"], "x", "y")
    assert again == message_id and other != message_id and plain != message_id
    assert [m["Message-ID"] for m in smtp_sink.wait_for(4)[1:]] == [again, other, plain]


def test_email_login() -> None:
    with SmtpSink(auth={"bot": "s3cret"}) as sink:
        send_email(_settings(sink, username="bot", password="s3cret"), ["a@example.com"], "hi", "body")
        sink.wait_for(1)
        assert sink.logins == ["bot"]
        with pytest.raises(DeliveryError) as info:
            send_email(_settings(sink, username="bot", password="wrong"), ["a@example.com"], "hi", "body")
        assert info.value.retryable is False


@pytest.mark.parametrize(
    ("to", "subject"),
    [
        (["a@example.com"], "Hello\r\nBcc: victim@example.com"),
        (["a@example.com"], "Hello\nX-Injected: 1"),
        (["a@example.com\r\nBcc: victim@example.com"], "Hello"),
        (["Name\n <a@example.com>"], "Hello"),
        (["not-an-address"], "Hello"),
        (["a@b@example.com"], "Hello"),
        (["a@-example-.com"], "Hello"),
        ([], "Hello"),
    ],
)
def test_email_header_injection_and_bad_addresses_refused(smtp_sink: SmtpSink, to: list[str], subject: str) -> None:
    with pytest.raises(DeliveryError) as info:
        send_email(_settings(smtp_sink), to, subject, "body")
    assert info.value.retryable is False
    time.sleep(0.05)
    assert smtp_sink.messages == []


def test_email_temporary_and_permanent_smtp_failures(smtp_sink: SmtpSink) -> None:
    smtp_sink.set_replies("451 4.3.0 Try again later", "554 5.7.1 Rejected", "250 OK")
    with pytest.raises(DeliveryError) as temporary:
        send_email(_settings(smtp_sink), ["a@example.com"], "s", "b")
    with pytest.raises(DeliveryError) as permanent:
        send_email(_settings(smtp_sink), ["a@example.com"], "s", "b")
    assert (temporary.value.retryable, temporary.value.status) == (True, 451)
    assert (permanent.value.retryable, permanent.value.status) == (False, 554)
    send_email(_settings(smtp_sink), ["a@example.com"], "s", "b")
    assert len(smtp_sink.wait_for(1)) == 1


def test_email_refused_recipient_is_permanent() -> None:
    with SmtpSink(reject_recipients=["ghost@example.com"]) as sink:
        with pytest.raises(DeliveryError) as info:
            send_email(_settings(sink), ["ghost@example.com"], "s", "b")
        assert info.value.retryable is False


def test_email_unreachable_server_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        with pytest.raises(DeliveryError) as info:
            send_email(
                SmtpSettings("127.0.0.1", port, None, None, "none", "a@example.com", 2, "localhost"),
                ["b@example.com"],
                "s",
                "b",
            )
    assert info.value.retryable is True


# ---------------------------------------------------------------------------
# Webhooks (real HTTP sink)
# ---------------------------------------------------------------------------


def test_sign_body() -> None:
    body = b'{"a":1}'
    assert sign_body("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()


def test_webhook_delivered_with_valid_signature(webhook_sink: WebhookSink) -> None:
    payload = {"名字": "李雷", "amount": Decimal("12.50"), "due": dt.date(2024, 3, 5), "n": [1, None]}
    result = call_webhook(
        webhook_sink.url + "?source=formwork", payload, secret="s3cret", idempotency_key="rule:9:1", allow_private=True
    )
    assert result == WebhookResult(status=200, body="ok")
    (request,) = webhook_sink.wait_for(1)
    assert webhook_sink.verify("s3cret") and not webhook_sink.verify("wrong")
    assert request.method == "POST" and request.path == "/hook?source=formwork"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "Formwork-Webhook/1"
    assert request.headers["X-Formwork-Idempotency-Key"] == "rule:9:1"
    assert request.body == '{"名字":"李雷","amount":"12.50","due":"2024-03-05","n":[1,null]}'.encode()
    assert request.json()["名字"] == "李雷"


def test_webhook_without_secret_has_no_signature(webhook_sink: WebhookSink) -> None:
    call_webhook(webhook_sink.url, [1], secret=None, idempotency_key=None, allow_private=True)
    (request,) = webhook_sink.wait_for(1)
    assert "X-Formwork-Signature" not in request.headers
    assert "X-Formwork-Idempotency-Key" not in request.headers


def test_webhook_connects_to_vetted_address_but_keeps_host_header(
    webhook_sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_getaddrinfo = socket.getaddrinfo
    looked_up: list[str] = []

    def fake_getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list[tuple]:
        looked_up.append(host)
        if host == "hooks.example.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        assert host == "127.0.0.1", host  # connecting to the vetted literal, not the name again
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    url = f"http://hooks.example.test:{webhook_sink.port}/in"
    call_webhook(url, {}, secret=None, idempotency_key=None, allow_private=True)
    assert webhook_sink.wait_for(1)[0].headers["Host"] == f"hooks.example.test:{webhook_sink.port}"
    assert looked_up.count("hooks.example.test") == 1


def test_webhook_loopback_refused_unless_allowed(webhook_sink: WebhookSink) -> None:
    for url in (webhook_sink.url, webhook_sink.url.replace("127.0.0.1", "localhost")):
        with pytest.raises(DeliveryError) as info:
            call_webhook(url, {}, secret=None, idempotency_key=None)
        assert info.value.retryable is False
    time.sleep(0.05)
    assert webhook_sink.requests == []


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to resolve or connect fail the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket.socket, "connect_ex", forbidden)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://192.168.1.5:8080/hook",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://[::1]:8080/hook",
        "http://0.0.0.0/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[2002:7f00:1::]/",
        "http://224.0.0.1/",
        "https://127.0.0.1:8443/",
        "http://2130706433/",
        "http://127.1/",
        "http://0x7f000001/",
    ],
)
def test_private_destinations_refused_without_traffic(no_network: None, url: str) -> None:
    with pytest.raises(DeliveryError) as info:
        call_webhook(url, {"x": 1}, secret="k", idempotency_key="k1")
    assert info.value.retryable is False


def test_host_with_any_private_address_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 443)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("must not connect"))
    with pytest.raises(DeliveryError, match="non-public") as info:
        call_webhook("https://rebind.example.test/hook", {}, secret=None, idempotency_key=None)
    assert info.value.retryable is False


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://127.0.0.1/", "http://user:pw@127.0.0.1/",
     "http:///nohost", "http://127.0.0.1/a b"],
)
def test_bad_urls_refused(no_network: None, url: str) -> None:
    with pytest.raises(DeliveryError) as info:
        call_webhook(url, {}, secret=None, idempotency_key=None, allow_private=True)
    assert info.value.retryable is False


def test_webhook_redirect_is_a_failure(webhook_sink: WebhookSink) -> None:
    webhook_sink.set_responses((302, "", {"Location": "http://127.0.0.1:9/elsewhere"}))
    with pytest.raises(DeliveryError, match="redirect") as info:
        call_webhook(webhook_sink.url, {}, secret=None, idempotency_key=None, allow_private=True)
    assert (info.value.retryable, info.value.status) == (False, 302)
    time.sleep(0.05)
    assert len(webhook_sink.requests) == 1


def test_webhook_status_classification(webhook_sink: WebhookSink) -> None:
    webhook_sink.set_responses(503, (429, "slow down", {"Retry-After": "7"}), (400, "bad field"), 200)
    outcomes = []
    for _ in range(3):
        with pytest.raises(DeliveryError) as info:
            call_webhook(webhook_sink.url, {"i": 1}, secret="k", idempotency_key="same", allow_private=True)
        outcomes.append((info.value.status, info.value.retryable))
    assert outcomes == [(503, True), (429, True), (400, False)]
    assert info.value.message.endswith("bad field")
    ok = call_webhook(webhook_sink.url, {"i": 1}, secret="k", idempotency_key="same", allow_private=True)
    assert ok.status == 200
    requests = webhook_sink.wait_for(4)
    assert {r.headers["X-Formwork-Idempotency-Key"] for r in requests} == {"same"}
    assert len({r.headers["X-Formwork-Signature"] for r in requests}) == 1


def test_webhook_retry_after_is_reported(webhook_sink: WebhookSink) -> None:
    webhook_sink.set_responses((429, "", {"Retry-After": "7"}))
    with pytest.raises(DeliveryError) as info:
        call_webhook(webhook_sink.url, {}, secret=None, idempotency_key=None, allow_private=True)
    assert info.value.retry_after == 7


def test_webhook_timeout_is_retryable() -> None:
    with WebhookSink(delay=3) as sink:
        start = time.monotonic()
        with pytest.raises(DeliveryError, match="did not answer") as info:
            call_webhook(sink.url, {}, secret=None, idempotency_key=None, timeout=0.3, allow_private=True)
        assert info.value.retryable is True
        assert time.monotonic() - start < 2


def test_webhook_response_is_capped(webhook_sink: WebhookSink) -> None:
    webhook_sink.set_responses((200, "x" * 200_000))
    result = call_webhook(webhook_sink.url, {}, secret=None, idempotency_key=None, allow_private=True,
                          max_response_bytes=1000)
    assert result.body == "x" * 1000


def test_webhook_refused_connection_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        with pytest.raises(DeliveryError) as info:
            call_webhook(url, {}, secret=None, idempotency_key=None, timeout=2, allow_private=True)
    assert info.value.retryable is True


def test_webhook_payload_must_be_json(no_network: None) -> None:
    with pytest.raises(DeliveryError, match="JSON") as info:
        call_webhook("http://127.0.0.1/", {"x": object()}, secret=None, idempotency_key=None, allow_private=True)
    assert info.value.retryable is False
    with pytest.raises(DeliveryError):
        call_webhook("http://127.0.0.1/", {"x": float("nan")}, secret=None, idempotency_key=None, allow_private=True)


def test_backoff_delay_grows_with_jitter_and_cap() -> None:
    for attempt, full in [(1, 30), (2, 60), (3, 120), (5, 480), (20, 3600), (10_000, 3600)]:
        delays = [backoff_delay(attempt) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1
    assert backoff_delay(0) <= 30
    assert backoff_delay(3, base=1, cap=2) <= 2


def test_payload_json_is_compact_and_signature_covers_exact_bytes(webhook_sink: WebhookSink) -> None:
    payload = render_value({"title": "{{ record.title }}", "id": "{{ record.id }}"}, CONTEXT)
    call_webhook(webhook_sink.url, payload, secret="k", idempotency_key=None, allow_private=True)
    (request,) = webhook_sink.wait_for(1)
    assert request.body == json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    assert request.headers["X-Formwork-Signature"] == sign_body("k", request.body)


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------

SAT = datetime(2024, 5, 11, 12, 0, tzinfo=UTC)  # a Saturday


def _next(spec: dict, after: datetime = SAT) -> datetime:
    fire = parse_schedule(spec).get_next_fire_time(None, after)
    assert fire is not None
    return fire.astimezone(UTC)


def test_cron_form_uses_crontab_weekdays_and_timezone() -> None:
    # "1-5" is Monday-Friday as in crontab: from Saturday the next run is Monday 09:00 Shanghai.
    assert _next({"cron": "0 9 * * 1-5", "timezone": "Asia/Shanghai"}) == datetime(2024, 5, 13, 1, 0, tzinfo=UTC)
    assert _next({"cron": "30 8 * * 0"}) == datetime(2024, 5, 12, 8, 30, tzinfo=UTC)
    assert _next({"cron": "0 0 * * 7"}) == datetime(2024, 5, 12, 0, 0, tzinfo=UTC)
    assert _next({"cron": "*/15 * * * *"}, SAT + timedelta(seconds=1)) == datetime(2024, 5, 11, 12, 15, tzinfo=UTC)
    assert _next({"cron": "@daily"}) == datetime(2024, 5, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"every": "day", "at": "09:00", "timezone": "Asia/Shanghai"}, datetime(2024, 5, 12, 1, 0, tzinfo=UTC)),
        ({"every": "weekday", "at": "09:00"}, datetime(2024, 5, 13, 9, 0, tzinfo=UTC)),
        ({"every": "week", "weekday": "wed", "at": "17:30"}, datetime(2024, 5, 15, 17, 30, tzinfo=UTC)),
        ({"every": "month", "day": 1, "at": "08:00"}, datetime(2024, 6, 1, 8, 0, tzinfo=UTC)),
        ({"every": "month", "day": "last"}, datetime(2024, 5, 31, 0, 0, tzinfo=UTC)),
        ({"every": "hour", "at": ":20"}, datetime(2024, 5, 11, 12, 20, tzinfo=UTC)),
        ({"every": "day", "at": "09:00", "timezone": "America/New_York"}, datetime(2024, 5, 11, 13, 0, tzinfo=UTC)),
    ],
)
def test_friendly_form(spec: dict, expected: datetime) -> None:
    assert _next(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cron": "61 * * * *"}, "Invalid cron"),
        ({"cron": "* * * *"}, "5 fields"),
        ({"cron": "0 9 * * 1-5", "timezone": "Mars/Olympus"}, "Unknown time zone"),
        ({"cron": "0 9 * * 9"}, "day of week"),
        ({"cron": "0 9 1 * 1"}, "both day of month and day of week"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"every": "day", "at": "25:00"}, "not valid"),
        ({"every": "day", "at": "9am"}, "not valid"),
        ({"every": "fortnight"}, "'every' must be one of"),
        ({"every": "week", "weekday": "someday"}, "Unknown weekday"),
        ({"every": "month", "day": 0}, "Day of month"),
        ({"every": "day", "weekday": "mon"}, "only applies"),
        ({"every": "day", "tz": "UTC"}, "Unknown schedule field"),
        ({}, "exactly one"),
        ({"cron": "0 9 * * *", "every": "day"}, "exactly one"),
    ],
)
def test_schedule_errors(spec: dict, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(spec)


DAILY_9_SHANGHAI = {"cron": "0 9 * * *", "timezone": "Asia/Shanghai"}  # 01:00 UTC


def test_due_firings_coalesces_after_three_day_downtime() -> None:
    last = datetime(2024, 5, 7, 1, 0, tzinfo=UTC)
    now = datetime(2024, 5, 10, 1, 20, tzinfo=UTC)
    assert due_firings(DAILY_9_SHANGHAI, last, now, timedelta(hours=1)) == [datetime(2024, 5, 10, 1, 0, tzinfo=UTC)]
    every_minute = due_firings({"cron": "* * * * *"}, last, now, timedelta(minutes=5))
    assert every_minute == [now]


def test_due_firings_none_outside_grace_or_already_fired() -> None:
    last = datetime(2024, 5, 7, 1, 0, tzinfo=UTC)
    assert due_firings(DAILY_9_SHANGHAI, last, datetime(2024, 5, 10, 3, 0, tzinfo=UTC), timedelta(hours=1)) == []
    fired = datetime(2024, 5, 10, 1, 0, tzinfo=UTC)
    assert due_firings(DAILY_9_SHANGHAI, fired, fired + timedelta(minutes=5), timedelta(hours=1)) == []
    assert due_firings(DAILY_9_SHANGHAI, fired, fired, timedelta(hours=1)) == []


def test_due_firings_without_history_does_not_fire_the_past() -> None:
    fire = datetime(2024, 5, 10, 1, 0, tzinfo=UTC)
    assert due_firings(DAILY_9_SHANGHAI, None, fire + timedelta(minutes=1), timedelta(hours=1)) == []
    assert due_firings(DAILY_9_SHANGHAI, None, fire + timedelta(microseconds=300), timedelta(hours=1)) == [fire]


def test_due_firings_requires_aware_datetimes() -> None:
    with pytest.raises(ScheduleError, match="timezone-aware"):
        due_firings(DAILY_9_SHANGHAI, None, datetime(2024, 5, 10), timedelta(hours=1))
    with pytest.raises(ScheduleError, match="negative"):
        due_firings(DAILY_9_SHANGHAI, None, SAT, timedelta(hours=-1))
