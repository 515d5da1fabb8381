"""The Batch API part of the conformance suite: run for backends that implement it.

:class:`ProviderBatchContract` is mixed into ``BackendContract``: every test skips itself for a
backend that is not a :class:`~loom_protocol.ProviderBatchBackend`. Against FakeLLMServer's
Batch APIs it checks what the engine relies on: lines encode the online body, a batch goes
round trip with answers matched by ``custom_id``, errored lines are classified with the online
table, expired lines come back retryable with ``detail="expired"``, failing polls are
retryable, and an empty batch is refused before any call.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from loom_protocol import (
    Backend,
    BackendError,
    ErrorCode,
    LoomUsageError,
    ProviderBatchBackend,
    ProviderBatchLine,
    ProviderBatchState,
)

from ._batch_jobs import BatchPlan
from ._contract import CONTRACT_API_KEY, contract_request
from ._replies import FakeReply, RecordedRequest
from ._server import FakeLLMServer

__all__ = ["ProviderBatchContract"]


def _reply(request: RecordedRequest) -> str | FakeReply:
    text = request.last_user_text
    if text == "refuse":
        return FakeReply("refused by the fake", status=400)
    return json.dumps({"echo": text})


class ProviderBatchContract:
    """The provider-batch checks of ``BackendContract`` (see the module docstring)."""

    wire_format: ClassVar[str]

    def make_backend(self, port: int, *, api_key: str | None, timeout: float) -> Backend:
        raise NotImplementedError

    def batch_backend(self, server: FakeLLMServer, plan: BatchPlan | None = None) -> Any:
        """The backend under test, or a skip when it has no Batch API."""
        backend = self.make_backend(server.port, api_key=CONTRACT_API_KEY, timeout=10.0)
        if not isinstance(backend, ProviderBatchBackend):
            pytest.skip("the backend does not implement ProviderBatchBackend")
        server.handler = _reply
        server.batch_plan = plan or BatchPlan()
        return backend

    @staticmethod
    def batch_lines(backend: Any, texts: list[str]) -> list[bytes]:
        return [
            backend.encode_line(ProviderBatchLine(custom_id=f"id-{i}", request=contract_request(t)))
            for i, t in enumerate(texts)
        ]

    async def test_provider_batch_line_is_the_online_body(self, server: FakeLLMServer) -> None:
        backend = self.batch_backend(server)
        try:
            await backend.acomplete(contract_request("same"))
            online = server.requests[-1].body
            item = json.loads(self.batch_lines(backend, ["same"])[0])
            assert item["custom_id"] == "id-0"
            assert online in (item.get("body"), item.get("params"))
        finally:
            await backend.aclose()
            server.batch_plan = BatchPlan()

    async def test_provider_batch_round_trip(self, server: FakeLLMServer) -> None:
        backend = self.batch_backend(server, BatchPlan(shuffle=True))
        try:
            texts = ["a", "refuse", "c", "d"]
            info = await backend.asubmit_batch(self.batch_lines(backend, texts), metadata={})
            assert not info.state.is_final
            done = await backend.aget_batch(info.batch_id)
            assert done.state is ProviderBatchState.COMPLETED
            assert done.results_ready
            assert (done.counts.succeeded, done.counts.failed) == (3, 1)
            items = {item.custom_id: item for item in await backend.aresults(info.batch_id)}
            assert set(items) == {"id-0", "id-1", "id-2", "id-3"}
            for index in (0, 2, 3):
                response = items[f"id-{index}"].response
                assert response is not None
                assert json.loads(response.content) == {"echo": texts[index]}
            refused = items["id-1"].error
            assert refused is not None
            assert (refused.code, refused.retryable) == (ErrorCode.PROVIDER_BAD_REQUEST, False)
            listed = await backend.alist_batches(created_after=info.created_at)
            assert info.batch_id in [b.batch_id for b in listed]
        finally:
            await backend.aclose()
            server.batch_plan = BatchPlan()

    async def test_provider_batch_expired_lines_are_retryable(self, server: FakeLLMServer) -> None:
        backend = self.batch_backend(server, BatchPlan(expire_after_fraction=0.5))
        try:
            info = await backend.asubmit_batch(self.batch_lines(backend, list("abcd")), metadata={})
            ended = await backend.aget_batch(info.batch_id)
            assert ended.state is ProviderBatchState.EXPIRED
            items = await backend.aresults(info.batch_id)
            assert len([i for i in items if i.response is not None]) == 2
            expired = [i.error for i in items if i.error is not None]
            assert len(expired) == 2
            assert all(e.retryable and e.detail == "expired" for e in expired)
        finally:
            await backend.aclose()
            server.batch_plan = BatchPlan()

    async def test_provider_batch_failing_polls_are_retryable(self, server: FakeLLMServer) -> None:
        backend = self.batch_backend(server)
        try:
            info = await backend.asubmit_batch(self.batch_lines(backend, ["a"]), metadata={})
            server.batch_plan = BatchPlan(poll_failures=1)
            with pytest.raises(BackendError) as caught:
                await backend.aget_batch(info.batch_id)
            assert caught.value.error.retryable
            assert CONTRACT_API_KEY not in str(caught.value.error)
            assert (await backend.aget_batch(info.batch_id)).state.is_final
        finally:
            await backend.aclose()
            server.batch_plan = BatchPlan()

    async def test_provider_batch_empty_is_refused(self, server: FakeLLMServer) -> None:
        backend = self.batch_backend(server)
        try:
            with pytest.raises(LoomUsageError):
                await backend.asubmit_batch([], metadata={})
            assert server.request_count == 0
        finally:
            await backend.aclose()
