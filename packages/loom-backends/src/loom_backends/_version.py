"""The package version, defined once (the User-Agent sends it too)."""

__all__ = ["__version__"]

__version__ = "0.2.0"
