"""outreach-sendgrid: email through SendGrid for outreach.

Installed, it registers the channel type ``sendgrid`` through the entry-point group ``outreach``::

    [channels.email]
    plugin = "sendgrid"
    from_email = "shop@example.com"
    unsubscribe_url = "https://example.com/unsubscribe?c={customer_id}&k={key}"

The API key is read from ``SENDGRID_API_KEY`` (or the variable ``api_key_env`` names). See the
README for every setting, and :mod:`outreach_sendgrid.testing` for a fake SendGrid to test against.
"""

from outreach import hookimpl

from outreach_sendgrid.channel import SendGridChannel

__all__ = ["SendGridChannel", "outreach_register_channels"]


@hookimpl
def outreach_register_channels(register):
    """Register the ``sendgrid`` channel type."""
    register(SendGridChannel)
