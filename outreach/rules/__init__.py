"""Built-in rules: newsletter, thank_you, reminder, apology and birthday."""
