"""outreach: stay in touch with customers by email and SMS without ever bothering them.

Writing a plugin
----------------
A plugin is a module (usually its own distribution) that implements some of the hooks in
:mod:`outreach.hookspecs` and is found through the entry-point group ``outreach``::

    # pyproject.toml of your distribution
    [project.entry-points.outreach]
    whatsapp = "outreach_whatsapp"

    # outreach_whatsapp/__init__.py
    from outreach import Channel, hookimpl

    class WhatsApp(Channel):
        type_name = "whatsapp"
        address = "phone"
        ...

    @hookimpl
    def outreach_register_channels(register):
        register(WhatsApp)

Run ``outreach plugins`` to see it loaded, and check it with :func:`outreach.testing.check_channel`.
The public surface for plugin authors is what this package exports (``__all__``), and the modules
:mod:`outreach.hookspecs`, :mod:`outreach.channel`, :mod:`outreach.rule`, :mod:`outreach.audience`,
:mod:`outreach.settings`, :mod:`outreach.decision`, :mod:`outreach.sms` and :mod:`outreach.testing`;
everything else may change without notice (docs: How-to, Write a plugin).
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

#: Marker for hook implementations: decorate plugin functions with ``@outreach.hookimpl``.
hookimpl = pluggy.HookimplMarker("outreach")

try:
    __version__ = version("outreach")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

# The public API, importable from ``outreach`` itself (after ``hookimpl``: these modules' plugins
# import it from here).
from outreach.audience import Customer, Event, Profile, Source  # noqa: E402
from outreach.channel import (Channel, Delivery, OutgoingMessage, PermanentError,  # noqa: E402
                              TemplateField, TransientError, UnknownOutcomeError)
from outreach.decision import CampaignInfo, ChannelInfo, Choice, DecisionContext, Defer, Refusal  # noqa: E402
from outreach.plugins import Plugins, get_plugins  # noqa: E402
from outreach.rule import Candidate, Rule, SelectContext  # noqa: E402
from outreach.settings import Secret, Setting  # noqa: E402

__all__ = [
    "__version__",
    "hookimpl",
    # what plugins register
    "Channel", "Rule", "Source", "Setting", "Secret", "TemplateField",
    # what channels send and answer
    "OutgoingMessage", "Delivery", "TransientError", "PermanentError", "UnknownOutcomeError",
    # what rules and sources read and make
    "Customer", "Event", "Profile", "Candidate", "SelectContext",
    # what policy steps are asked and answer
    "CampaignInfo", "ChannelInfo", "Choice", "DecisionContext", "Refusal", "Defer",
    # a plugin manager for tests: installed plugins and the ones given
    "get_plugins", "Plugins",
]
