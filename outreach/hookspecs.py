"""Every hook a plugin can implement. Names start with ``outreach_``; implement them with
``@outreach.hookimpl`` in a module listed under the entry-point group ``outreach``.

Built-in rules, channels, sources and policy steps use these same hooks, so anything the core does
a plugin can do, replace or extend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import click

    from outreach.audience import Customer, Source
    from outreach.channel import Channel, ChannelError, Delivery, OutgoingMessage
    from outreach.decision import Choice, ChannelInfo, DecisionContext, Defer, Refusal
    from outreach.rule import Candidate, Rule

hookspec = pluggy.HookspecMarker("outreach")


@hookspec
def outreach_register_channels(register: Callable[["type[Channel]"], None]) -> None:
    """Register channel types by calling ``register(ChannelSubclass)`` once per type.

    The core checks each class (a name, an address kind, declared settings) and refuses a name that
    another plugin already registered, naming both plugins.
    """


@hookspec
def outreach_register_rules(register: Callable[["type[Rule]"], None]) -> None:
    """Register rules by calling ``register(RuleSubclass)``; same checks as channels."""


@hookspec
def outreach_register_sources(register: Callable[["type[Source]"], None]) -> None:
    """Register audience sources by calling ``register(SourceSubclass)``."""


@hookspec(firstresult=True)
def outreach_check_channel(
    candidate: "Candidate", channel: "ChannelInfo", ctx: "DecisionContext"
) -> "Refusal | None":
    """May ``candidate`` be written to on ``channel``? Return a :class:`Refusal` to rule it out.

    Asked for each of the campaign's channels in order; the first channel with no refusal is chosen.
    Stops at the first non-None result, so the built-in steps (consent, then suppression, then address
    validity) answer first and a refusal names the first reason that applies.
    """


@hookspec
def outreach_decide(
    candidate: "Candidate", choice: "Choice", ctx: "DecisionContext"
) -> "Refusal | Defer | None":
    """After a channel is chosen: veto (:class:`Refusal`) or postpone (:class:`Defer`) the send.

    All implementations are asked. Any refusal wins (the first one names the reason); otherwise the
    latest deferral wins. The built-in step is quiet hours in the recipient's time zone.
    """


@hookspec
def outreach_template_context(customer: "Customer", campaign: str) -> "dict[str, Any] | None":
    """Extra template variables for ``customer`` in ``campaign``; every result is merged in.

    Called when a message is planned; what it returns is stored with the message, so a later
    render (at send time, in ``preview`` or ``history``) gives exactly the same text.
    """


@hookspec
def outreach_message_sent(message: "OutgoingMessage", delivery: "Delivery") -> None:
    """Observer: ``message`` was accepted by its provider. For audit trails and metrics."""


@hookspec
def outreach_message_failed(message: "OutgoingMessage", error: "ChannelError", state: str) -> None:
    """Observer: ``message`` did not go out; ``state`` is ``failed``, ``deferred`` or ``unknown``."""


@hookspec
def outreach_register_commands(cli: "click.Group") -> None:
    """Add commands to the ``outreach`` command line with ``cli.add_command(...)``."""
