"""outreach: stay in touch with customers by email and SMS without ever bothering them.

Writing a plugin
----------------
A plugin is a module (usually its own distribution) that implements some of the hooks in
:mod:`outreach.hookspecs` and is found through the entry-point group ``outreach``::

    # pyproject.toml of your distribution
    [project.entry-points.outreach]
    whatsapp = "outreach_whatsapp"

    # outreach_whatsapp/__init__.py
    from outreach import hookimpl
    from outreach.channel import Channel, Delivery, TransientError

    class WhatsApp(Channel):
        type_name = "whatsapp"
        address = "phone"
        ...

    @hookimpl
    def outreach_register_channels(register):
        register(WhatsApp)

Run ``outreach plugins`` to see it loaded, and check it with :func:`outreach.testing.check_channel`.
The public surface for plugin authors is :mod:`outreach.hookspecs`, :mod:`outreach.channel`,
:mod:`outreach.rule`, :mod:`outreach.audience`, :mod:`outreach.settings`, :mod:`outreach.sms` and
:mod:`outreach.testing`; everything else may change without notice.
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

#: Marker for hook implementations: decorate plugin functions with ``@outreach.hookimpl``.
hookimpl = pluggy.HookimplMarker("outreach")

try:
    __version__ = version("outreach")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["hookimpl", "__version__"]
