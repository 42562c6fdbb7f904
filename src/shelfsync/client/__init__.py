"""The sync client: keeps a folder identical on every device through the public API."""
