"""Testing helpers for plugin authors: a fake provider API and the channel contract check.

A channel plugin is tested with its provider's real SDK pointed at a :class:`FakeProvider` subclass
that speaks the provider's API on ``127.0.0.1``, checks every request against the provider's
OpenAPI description (:func:`load_spec`) and can fail on demand (429, 5xx, slow answers, dropped
connections). :func:`check_channel` then proves the plugin keeps the contract the core relies on:
installed through its entry point, settings and secrets declared right, errors classified as the
provider means them, one delivery per message of a batch::

    from outreach.testing import FakeProvider, Reply, check_channel, load_spec, sample_message

An audience source is checked the same way: :func:`check_source` hands it :class:`SourceData`
to store and proves it streams, filters, reads incrementally and looks customers up by id as the
core relies on.

:class:`Project` builds a throwaway project (deployment, campaign files, customers, events) and runs
it in-process or through the real ``outreach`` command, for end-to-end tests of a plugin.

This package is public API: plugins may import it (their tests do), and it changes with care.
"""

from outreach.testing.project import CLIResult, Project
from outreach.testing.contract import (ContractReport, check_channel, closed_port_url,
                                       sample_content, sample_message)
from outreach.testing.server import FakeProvider, Hold, RecordedRequest, Reply, load_spec
from outreach.testing.source_contract import SourceData, check_source, sample_data

__all__ = [
    "CLIResult",
    "ContractReport",
    "Project",
    "FakeProvider",
    "Hold",
    "RecordedRequest",
    "Reply",
    "check_channel",
    "closed_port_url",
    "load_spec",
    "sample_content",
    "sample_message",
    "SourceData",
    "check_source",
    "sample_data",
]
