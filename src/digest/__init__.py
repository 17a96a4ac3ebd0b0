"""digest: a self-hosted daily newsletter digest builder and sender."""

__version__ = "0.1.0"
