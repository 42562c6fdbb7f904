"""The shelfsync server: domain rules, use cases, storage and the HTTP API."""
