"""The helpers every channel uses from outreach.channel: a provider's wait hint, redaction of
credentials, and an exception's chain of causes."""

from __future__ import annotations

import base64
import http.client
import io
import logging
import urllib.error
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest
from multidict import CIMultiDict

from outreach.channel import (
    Channel, Redactor, basic_credentials, causes, connection_reason, redact,
    retry_after,
)
from outreach.settings import Secret, Setting

NOW = 1_800_000_000.0


# -- retry_after -----------------------------------------------------------------------------------

def _http_message(**headers: str) -> http.client.HTTPMessage:
    text = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return http.client.parse_headers(io.BytesIO(text.encode()))


@pytest.mark.parametrize("headers, seconds", [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW + 30, timezone.utc),
                                     usegmt=True)}, 30.0),
    ({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, 0.0),  # a date gone by: at once
    ({"Retry-After": "-3"}, 0.0),
    ({"X-RateLimit-Reset": str(int(NOW) + 60)}, 60.0),  # SendGrid: the Unix time of the reset
    ({"X-RateLimit-Reset": "12"}, 12.0),  # a small number is a number of seconds
    ({"Retry-After": "5", "X-RateLimit-Reset": str(int(NOW) + 60)}, 5.0),  # Retry-After wins
    ({"Retry-After": "soon", "X-RateLimit-Reset": str(int(NOW) + 9)}, 9.0),
    ({"Retry-After": "inf"}, None),
    ({"Retry-After": "soon"}, None),
    ({}, None),
    (None, None),
], ids=["seconds", "fraction", "http-date", "past-date", "negative", "reset-epoch",
        "reset-seconds", "retry-after-first", "unreadable-then-reset", "infinite", "unreadable",
        "none", "no-headers"])
def test_retry_after_reads_seconds_dates_and_ratelimit_resets(headers, seconds):
    assert retry_after(headers, now=NOW) == seconds


@pytest.mark.parametrize("make", [
    lambda: {"rEtRy-AfTeR": "4"},
    lambda: _http_message(Retry_After="4"),  # urllib / python_http_client
    lambda: CIMultiDict({"retry-after": "4"}),  # aiohttp / Twilio's async client
    lambda: [("Retry-After", "4")],
], ids=["dict", "http.client", "multidict", "pairs"])
def test_retry_after_finds_the_header_whatever_holds_it(make):
    assert retry_after(make(), now=NOW) == 4.0


def test_retry_after_counts_from_the_clock_by_default():
    when = datetime.now(timezone.utc) + timedelta(seconds=100)
    assert 95 <= retry_after({"Retry-After": format_datetime(when, usegmt=True)}) <= 100


# -- causes ----------------------------------------------------------------------------------------

def test_causes_walks_cause_context_args_and_reason_once_each():
    refused = ConnectionRefusedError(111, "Connection refused")
    wrapped = urllib.error.URLError(refused)  # urllib keeps it in .reason (and args)
    try:
        try:
            raise wrapped
        except urllib.error.URLError as exc:
            raise RuntimeError("client error") from exc
    except RuntimeError as outer:
        chain = list(causes(outer))
    assert chain[0].args == ("client error",)
    assert chain[1] is wrapped and chain[2] is refused and len(chain) == 3


def test_causes_survives_a_cycle():
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert list(causes(a)) == [a, b]


def test_connection_reason_is_the_innermost_os_error_never_the_url():
    secret_url = "https://AC123:token@api.example.com/Accounts/AC123"
    error = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    error.filename = secret_url
    assert connection_reason(error) == "Connection refused"
    assert connection_reason(RuntimeError(TimeoutError())) == "TimeoutError"
    assert connection_reason(ValueError(secret_url)) == "ValueError"


# -- redaction -------------------------------------------------------------------------------------

def test_authorization_values_are_masked_wherever_they_show():
    text = ('{"headers": {"authorization": "Basic QUMxMjM6c2VjcmV0dG9rZW4="}} '
            "Authorization: Bearer SG.abcdefgh.ijklmnop, WWW-Authenticate: Basic realm=\"x\"")
    assert redact(text) == ('{"headers": {"authorization": "Basic ***"}} '
                            'Authorization: Bearer ***, WWW-Authenticate: Basic realm="x"')


def test_registered_secrets_are_masked_raw_url_encoded_and_as_a_basic_pair():
    secrets = Redactor()
    pair = base64.b64encode(b"AC42:tok/en+1").decode()
    secrets.add(["AC42", "tok/en+1", *basic_credentials("AC42", "tok/en+1")])
    text = f"/Accounts/AC42/x?t=tok%2Fen%2B1 tok/en+1 {pair} {pair.rstrip('=')} AC4"
    assert secrets.redact(text) == "/Accounts/***/x?t=*** *** *** *** AC4"
    assert secrets.redact("short abc", extra=["abc"]) == "short ***"


def test_a_secret_stays_masked_until_every_holder_removed_it():
    secrets = Redactor()
    secrets.add(["k-123456"])
    secrets.add(["k-123456"])
    secrets.remove(["k-123456"])
    assert secrets.redact("k-123456") == "***"
    secrets.remove(["k-123456"])
    assert secrets.redact("k-123456") == "k-123456"


def test_the_log_filter_masks_formatted_records(caplog):
    secrets = Redactor()
    secrets.add(["hunter2-secret"])
    logger = logging.getLogger("outreach.test.redaction")
    secrets.guard("outreach.test.redaction")
    secrets.guard("outreach.test.redaction")  # once is enough
    assert logger.filters.count(secrets) == 1
    with caplog.at_level(logging.DEBUG, logger="outreach.test.redaction"):
        logger.debug("HEADERS: %s", {"Authorization": "Bearer hunter2-secret"})
        logger.debug("token %s", "hunter2-secret")
    assert "hunter2-secret" not in caplog.text and caplog.text.count("***") == 2


class _Keyed(Channel):
    type_name = "keyed"
    settings = {"key": Setting("str", secret=True, env="KEYED_KEY"),
                "user": Setting("str")}


def test_a_channel_masks_its_secrets_while_it_is_open():
    channel = _Keyed("keyed", {"key": Secret("kk-live-0001", "KEYED_KEY"), "user": "shop"})
    assert channel.secret_values() == ["kk-live-0001"]
    assert channel.redact("echo kk-live-0001 shop") == "echo *** shop"
    assert redact("elsewhere kk-live-0001") == "elsewhere ***"  # any code, any channel
    channel.close()
    assert redact("elsewhere kk-live-0001") == "elsewhere kk-live-0001"
    other = _Keyed("other", {"key": Secret("kk-live-0001", "KEYED_KEY")})
    channel.close()  # closing twice takes nothing from another holder
    assert redact("kk-live-0001") == "***"
    other.close()
