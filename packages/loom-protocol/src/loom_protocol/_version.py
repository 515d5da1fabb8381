"""The protocol's own version, separate from the package version."""

__all__ = ["PROTOCOL_VERSION"]

#: Bumped (major) with any breaking change of a contract in this package; services that
#: exchange Loom's JSON can compare it.
PROTOCOL_VERSION = "2.0"
# 2.0: ``Backend`` is asyncio only (``acomplete`` + ``aclose``); ``complete``/``close`` are gone.
