"""shelfsync: self-hosted multi-device library synchronization."""

__all__ = ["__version__"]

__version__ = "0.1.0"
