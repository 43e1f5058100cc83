"""Every hook a plugin can implement. Names start with ``outreach_``; implement them with
``@outreach.hookimpl`` in a module listed under the entry-point group ``outreach``.

Built-in rules, channels, sources and policy steps use these same hooks, so anything the core does
a plugin can do, replace or extend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import pluggy

if TYPE_CHECKING:
    import click

    from outreach.audience import Customer, Source
    from outreach.channel import Channel, ChannelError, Delivery, OutgoingMessage
    from outreach.decision import CampaignInfo, Choice, ChannelInfo, DecisionContext, Defer, Refusal
    from outreach.rule import Candidate, Rule
    from outreach.settings import Setting

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


@hookspec
def outreach_plugin_settings() -> "Mapping[str, Setting] | None":
    """Declare the settings of this plugin's own table, ``[plugins.NAME]`` in ``outreach.toml``.

    Return ``{"key": Setting(kind, help=...), ...}``. The core validates the table as it does a
    channel's (an unknown key or a wrong type is an error naming the file and the key) and hands
    the values to the policy hooks as ``ctx.plugin_settings("NAME")`` and to any code as
    ``project.plugin_settings("NAME")``; NAME is the plugin's entry-point name.

    Called once per plugin, on its own implementation, when it is loaded.
    """


@hookspec(firstresult=True)
def outreach_check_channel(
    candidate: "Candidate", channel: "ChannelInfo", ctx: "DecisionContext", campaign: "CampaignInfo"
) -> "Refusal | None":
    """May ``candidate`` be written to on ``channel``? Return a :class:`Refusal` to rule it out.

    :param candidate: the customer and what the rule selected them with.
    :param channel: the configured channel (its name, type, address kind, consent key).
    :param ctx: the run's instant and time zone, the batch's suppressions, plugin settings.
    :param campaign: the campaign's name, category and priority.

    Asked for each of the campaign's channels in order; the first channel with no refusal is chosen.
    Stops at the first non-None result. The built-in steps answer first, in this order: consent,
    suppression, address validity (their implementations are ``tryfirst`` and the core calls them
    before any other plugin's), so a customer with no consent is refused as such and no other
    plugin is asked about that channel. Any other answer than a Refusal or None stops the run.
    """


@hookspec
def outreach_decide(
    candidate: "Candidate", choice: "Choice", ctx: "DecisionContext", campaign: "CampaignInfo"
) -> "Refusal | Defer | None":
    """After a channel is chosen: veto (:class:`Refusal`) or postpone (:class:`Defer`) the send.

    :param candidate: the customer and what the rule selected them with.
    :param choice: the channel chosen, the normalised address and the planned send time.
    :param ctx: the run's instant and time zone, the batch's suppressions, plugin settings.
    :param campaign: the campaign's name, category and priority.

    All implementations are asked, the built-in step (quiet hours in the recipient's time zone)
    first. Any refusal wins (the first one names the reason); otherwise the latest deferral wins,
    and the built-in step is asked again about that new time, so a deferral never lands in quiet
    hours (it moves on to their end). Caps then count the send at its final time. Any other
    answer than a Refusal, a Defer or None stops the run.
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
