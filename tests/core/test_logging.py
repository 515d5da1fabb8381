"""What Loom does on its own is logged on "loom.*" loggers, without inputs or credentials."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import BaseModel

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_protocol import fingerprint
from loom_store import ResultRow, ResultStore

from .conftest import LoomFactory, echo_json

pytestmark = pytest.mark.timeout(120)

SECRET = "sk-test-secret-key"  # what make_loom passes as api_key
TEXT = "Jane Doe, 12 Private Lane"  # input content that must never reach a log


def first_time(reply: FakeReply) -> object:
    """A handler answering ``reply`` to each input's first request, then the echo."""
    seen: set[str] = set()

    def handler(req: RecordedRequest) -> str | FakeReply:
        key = req.last_user_text
        if key not in seen:
            seen.add(key)
            return reply
        return echo_json(req)

    return handler


def assert_clean(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        text = record.getMessage()
        assert SECRET not in text
        assert TEXT not in text
        assert "Private Lane" not in text


def loom_records(
    caplog: pytest.LogCaptureFixture, name: str, level: int
) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name and r.levelno == level]


def test_each_retry_is_logged_at_info(
    make_loom: LoomFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom")
    with FakeLLMServer(first_time(FakeReply("down", status=503))) as srv:
        loom = make_loom(srv, response_model=dict)
        result = loom.process(TEXT)
    assert result.is_success and result.attempts == 2
    (record,) = loom_records(caplog, "loom.retry", logging.INFO)
    message = record.getMessage()
    assert result.task_id[:12] in message
    assert "provider_unavailable" in message
    assert "HTTP 503" in message
    assert "retry 1 of 3 in " in message
    assert_clean(caplog)


def test_a_loom_wide_pause_is_a_warning(
    make_loom: LoomFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom")
    reply = FakeReply("slow down", status=429, headers={"Retry-After": "0.3"})
    with FakeLLMServer(first_time(reply)) as srv:
        loom = make_loom(srv, response_model=dict)
        assert loom.process(TEXT).is_success
    (pause,) = loom_records(caplog, "loom.ratelimit", logging.WARNING)
    assert "429" in pause.getMessage()
    assert "Retry-After 0.3 s" in pause.getMessage()
    assert "every worker" in pause.getMessage()
    assert_clean(caplog)


def test_a_reask_is_logged_at_info(
    make_loom: LoomFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom")
    calls: list[int] = []

    def bad_once(req: RecordedRequest) -> str:
        calls.append(1)
        return "this is not JSON at all" if len(calls) == 1 else echo_json(req)

    with FakeLLMServer(bad_once) as srv:
        loom = make_loom(srv, response_model=dict, auto_repair_json=False)
        result = loom.process(TEXT)
    assert result.is_success
    (record,) = loom_records(caplog, "loom.retry", logging.INFO)
    assert "json_invalid" in record.getMessage()
    assert "re-ask 1 of 3" in record.getMessage()
    assert result.task_id[:12] in record.getMessage()
    assert_clean(caplog)


def test_giving_up_is_a_warning(make_loom: LoomFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="loom")
    with FakeLLMServer(lambda req: FakeReply("down", status=503)) as srv:
        loom = make_loom(srv, response_model=dict, max_retries=1)
        result = loom.process(TEXT)
    assert not result.is_success
    (record,) = loom_records(caplog, "loom.retry", logging.WARNING)
    assert "giving up" in record.getMessage()
    assert "provider_unavailable" in record.getMessage()
    assert "2 attempts" in record.getMessage()
    assert_clean(caplog)


def test_giving_up_on_reasks_is_a_warning(
    make_loom: LoomFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom")
    with FakeLLMServer(lambda req: "never JSON") as srv:
        loom = make_loom(srv, response_model=dict, max_retries=1, auto_repair_json=False)
        assert not loom.process(TEXT).is_success
    (record,) = loom_records(caplog, "loom.retry", logging.WARNING)
    assert "giving up" in record.getMessage()
    assert_clean(caplog)


def test_refusing_a_long_retry_after_is_a_warning(
    make_loom: LoomFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom")
    reply = FakeReply("slow down", status=429, headers={"Retry-After": "86400"})
    with FakeLLMServer(lambda req: reply) as srv:
        loom = make_loom(srv, response_model=dict)
        assert not loom.process(TEXT).is_success
    (record,) = loom_records(caplog, "loom.retry", logging.WARNING)
    assert "asked to wait 86400 s" in record.getMessage()
    assert not loom_records(caplog, "loom.ratelimit", logging.WARNING)  # no pause
    assert_clean(caplog)


class Person(BaseModel):
    name: str


def test_a_store_fallback_is_a_warning(
    make_loom: LoomFactory,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    people = FakeLLMServer(lambda req: '{"name": "Ada"}').start()
    request.addfinalizer(people.stop)
    loom = make_loom(people, response_model=Person)
    bad = {"text": TEXT}
    store = ResultStore(tmp_path / "loom.db")
    try:
        # A stored success whose data no longer fits the model (written by an older version).
        store.put_many(
            [
                ResultRow(
                    task_name="people",
                    task_id=fingerprint(bad),
                    config_fp=loom.config_fp,
                    status="succeeded",
                    data='{"nom": "Private Lane"}',
                    input="{}",
                    attempts=1,
                )
            ]
        )
    finally:
        store.close()
    caplog.set_level(logging.INFO, logger="loom")
    batch = loom.map([bad, "other"], task_name="people")
    assert [r.is_success for r in batch] == [True, True]
    assert not batch[0].cached  # recomputed
    warnings = loom_records(caplog, "loom.store", logging.WARNING)
    assert len(warnings) == 2
    assert "reading it again in parts" in warnings[0].getMessage()
    assert "1 stored result(s) no longer validate" in warnings[1].getMessage()
    assert_clean(caplog)


def test_nothing_is_logged_when_all_goes_well(
    make_loom: LoomFactory, server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="loom")
    loom = make_loom(server, response_model=dict)
    assert len(loom.map([f"{TEXT} {i}" for i in range(20)]).successful()) == 20
    # The adaptive concurrency growing is a debug line (issue 15); nothing else, nothing louder.
    logged = [r for r in caplog.records if r.name.startswith("loom")]
    assert [r for r in logged if r.name != "loom.adaptive" or r.levelno > logging.DEBUG] == []


def test_the_progress_bar_shows_retries(
    make_loom: LoomFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeLLMServer(first_time(FakeReply("down", status=503))) as srv:
        loom = make_loom(srv, response_model=dict)
        loom.map(["a", "b", "c"], progress=True)
    err = capsys.readouterr().err
    assert "retries=3" in err


def test_the_progress_bar_shows_the_pause(
    make_loom: LoomFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    reply = FakeReply("slow down", status=429, headers={"Retry-After": "1.6"})
    with FakeLLMServer(first_time(reply)) as srv:
        loom = make_loom(srv, response_model=dict)
        loom.map(["only"], progress=True)
    err = capsys.readouterr().err
    assert "waiting=2s" in err or "waiting=1s" in err
    assert "retries=1" in err
