"""Fixtures for the SendGrid channel's tests: a FakeSendGrid per test and channels pointed at it.

Helpers are fixtures, not imports from this file: other test folders have a conftest.py too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from outreach.channel import Channel, OutgoingMessage
from outreach.settings import Resolved, resolve
from outreach.testing import sample_message
from outreach_sendgrid import SendGridChannel
from outreach_sendgrid.testing import FakeSendGrid

API_KEY = "SG.test-key-9f8e7d6c5b4a"


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=API_KEY) as provider:
        yield provider


@pytest.fixture
def resolve_table() -> Callable[..., Resolved]:
    """``resolve_table(table, environ)``: a [channels.email] table checked as the core checks it."""

    def run(table: dict[str, Any], environ: dict[str, str] | None = None) -> Resolved:
        declared = {**Channel.CORE_SETTINGS, **SendGridChannel.settings}
        env = {"SENDGRID_API_KEY": API_KEY} if environ is None else environ
        return resolve(declared, {"plugin": "sendgrid", **table}, file="outreach.toml",
                       prefix="channels.email", environ=env)

    return run


@pytest.fixture
def make_channel(fake: FakeSendGrid,
                 resolve_table: Callable[..., Resolved]) -> Iterator[Callable[..., SendGridChannel]]:
    """``make_channel(**settings)``: a SendGridChannel on ``fake``, settings resolved like the core."""
    made: list[SendGridChannel] = []

    def make(**settings: Any) -> SendGridChannel:
        table = {"from_email": "shop@example.com", "api_host": fake.url, **settings}
        resolved = resolve_table(table)
        assert resolved.problems == []
        own = {k: v for k, v in resolved.values.items() if k not in Channel.CORE_SETTINGS}
        channel = SendGridChannel("email", {**own, "project_root": ".",
                                            "timeout": float(resolved.values["timeout"])})
        made.append(channel)
        return channel

    yield make
    for channel in made:
        channel.close()


@pytest.fixture
def email() -> Callable[..., OutgoingMessage]:
    """``email(**fields)``: a rendered transactional email (outreach.testing.sample_message)."""
    return sample_message


@pytest.fixture
def template_batch() -> Callable[..., list[OutgoingMessage]]:
    """``template_batch(n, category=...)``: n messages of one dynamic-template campaign."""

    def make(n: int, category: str = "marketing",
             template_id: str = "d-0123456789abcdef") -> list[OutgoingMessage]:
        return [sample_message(key=f"newsletter:2024-06:c{i}", campaign="newsletter",
                               category=category, customer_id=f"c{i}",
                               address=f"reader{i}@example.com", name=f"Reader {i}", content={},
                               options={"template_id": template_id},
                               variables={"first_name": f"Reader {i}", "points": i})
                for i in range(n)]

    return make
