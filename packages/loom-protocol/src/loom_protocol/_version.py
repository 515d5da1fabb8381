"""The protocol's own version, separate from the package version."""

__all__ = ["PROTOCOL_VERSION"]

#: Bumped (major) with any breaking change of a contract in this package, (minor) with an
#: additive one; services that exchange Loom's JSON can compare it.
PROTOCOL_VERSION = "2.1"
# 2.1: additive: ErrorCode.BUDGET_EXCEEDED, the provider Batch API contract, rate-limit info,
#      prices and cost fields, Usage.cached_tokens, TaskResult/BatchSummary.provider_batch.
# 2.0: ``Backend`` is asyncio only (``acomplete`` + ``aclose``); ``complete``/``close`` are gone.
