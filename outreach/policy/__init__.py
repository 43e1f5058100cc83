"""Built-in policy steps, each registered as a plugin: consent, suppression, addresses, quiet hours."""
