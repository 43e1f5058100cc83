"""Built-in audience sources."""
