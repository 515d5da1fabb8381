"""Module-level handlers for FakeLLMServer(process=True): the child process imports them."""

from __future__ import annotations

from loom_backends.testing import FakeReply, RecordedRequest


def shout(request: RecordedRequest) -> str:
    return request.last_user_text.upper()


async def refuse_secrets(request: RecordedRequest) -> str | FakeReply:
    if "secret" in request.last_user_text:
        return FakeReply("no secrets here", status=400)
    return "fine"
