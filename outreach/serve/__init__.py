"""outreach serve: the endpoints providers and customers call (webhooks, unsubscribe, preferences,
feedback)."""
