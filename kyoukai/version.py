"""The Kyoukai version string, kept apart so every module can import it cheaply."""

__version__ = "3.0.0a1"
