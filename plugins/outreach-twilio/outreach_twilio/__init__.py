"""outreach-twilio: SMS through Twilio for outreach, found through the entry-point group ``outreach``.

Configure a channel with ``plugin = "twilio"`` (see the README for its settings); test against
:class:`outreach_twilio.testing.FakeTwilio`, a local server that speaks Twilio's Messages API.
"""

from outreach import hookimpl

from outreach_twilio.channel import TwilioSettingsError, TwilioSMS

__all__ = ["TwilioSMS", "TwilioSettingsError", "outreach_register_channels"]


@hookimpl
def outreach_register_channels(register):
    """Register the ``twilio`` channel type."""
    register(TwilioSMS)
