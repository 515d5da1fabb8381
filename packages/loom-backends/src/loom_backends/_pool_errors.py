"""The errors an :class:`~._pool.EndpointPool` hands the engine: each names its endpoint and
masks every endpoint's key (a server may echo another endpoint's key)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from loom_protocol import BackendError, Error, ErrorCode, redact_text

from ._errors import one_line
from ._pool_members import Member

__all__ = ["named", "none_left", "said"]


def said(exc: BaseException | None, secrets: Sequence[str]) -> str:
    """What a failure said, in one short line, for an endpoint's last error."""
    if isinstance(exc, BackendError):
        return redact_text(one_line(exc.error.message, 200), secrets)
    return "failed"


def named(member: Member, exc: BackendError, secrets: Sequence[str]) -> BackendError:
    """``exc`` with the endpoint named in its message (the detail kept)."""
    message = redact_text(f"{member.name}: {exc.error.message}", secrets)
    detail = redact_text(exc.error.detail, secrets) if exc.error.detail else None
    renamed = exc.error.model_copy(update={"message": message, "detail": detail})
    return BackendError(renamed, retry_after=exc.retry_after, rate_limit=exc.rate_limit)


def none_left(
    members: Sequence[Member],
    failures: Sequence[tuple[Member, BackendError]],
    secrets: Sequence[str],
) -> BackendError:
    """The error of a request with no endpoint left to try (called under the pool's lock)."""
    now = time.monotonic()
    tried = {m.index for m, _ in failures}
    parts = [str(exc.error.message) for _, exc in failures]
    for m in members:
        if m.index in tried:
            continue
        wait = m.breaker.retry_in(now)
        state = f"out, next probe in {wait:.1f} s" if wait else "out, probe in flight"
        last = f"; last: {m.last_error}" if m.last_error else ""
        parts.append(f"{m.name}: {state}{last}")
    if failures and failures[-1][1].code is ErrorCode.PROVIDER_RATE_LIMITED:
        return failures[-1][1]  # the engine's handling of a 429 (retry, Retry-After)
    what = "every endpoint failed this request or is out" if failures else "every endpoint is out"
    return BackendError(
        Error(
            code=ErrorCode.PROVIDER_UNAVAILABLE,
            message=redact_text(f"{what}: " + "; ".join(parts), secrets),
            detail=failures[-1][1].error.detail if failures else None,
            retryable=True,
            status=failures[-1][1].status if failures else None,
        )
    )
