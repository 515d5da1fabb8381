"""Credential scrubbing and URL redaction (pure functions)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import URL, make_url

from loom_store import scrub_config
from loom_store._secrets import Redactor, is_credential_key, render_url


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apikey",
        "apiKey",
        "API_KEY",
        "OPENAI_API_KEY",
        "x-api-key",
        "sslpassword",
        "auth",
        "Cookie",
        "Authorization",
        "proxy-authorization",
        "token",
        "access_token",
        "authToken",
        "secret",
        "client_secret",
        "secretKey",
        "password",
        "DB_PASSWORD",
        "passwd",
        "credentials",
        "private_key",
        "aws_access_key",
    ],
)
def test_credential_keys(key: str) -> None:
    assert is_credential_key(key)


@pytest.mark.parametrize(
    "key",
    ["model", "max_tokens", "max_completion_tokens", "tokens", "temperature", "monkey", "author"],
)
def test_ordinary_keys(key: str) -> None:
    assert not is_credential_key(key)


def test_scrub_config_at_any_depth() -> None:
    config = {
        "api_key": {"even": "a dict"},
        "list": [{"token": 1}, ("tuple", {"Password": None})],
        "url": "postgresql://u:pw@host/db and https://plain.example.com",
        "n": 3,
        1: "non-string keys are kept",
    }
    assert scrub_config(config) == {
        "api_key": "***",
        "list": [{"token": "***"}, ["tuple", {"Password": "***"}]],
        "url": "postgresql://u:***@host/db and https://plain.example.com",
        "n": 3,
        1: "non-string keys are kept",
    }
    assert config["api_key"] == {"even": "a dict"}  # a copy, the input is untouched


def test_render_url_masks_password_and_credential_query() -> None:
    url = make_url("postgresql+psycopg://bob:p%40ss@db:5432/x?sslmode=require&password=qq")
    shown = render_url(url)
    assert shown == "postgresql+psycopg://bob:***@db:5432/x?password=***&sslmode=require"


def test_redactor_masks_every_form_of_the_secret() -> None:
    url = URL.create(
        "postgresql", "bob", "p@ss w/rd", "db", database="x", query={"sslpassword": "k3y"}
    )
    redact = Redactor(url)
    text = (
        "failed: p@ss w/rd, p%40ss%20w%2Frd, p%40ss+w%2Frd; k3y; "
        "dsn 'host=db password=other' and mysql://u:zz@h/d"
    )
    assert redact(text) == (
        "failed: ***, ***, ***; ***; dsn 'host=db password=***' and mysql://u:***@h/d"
    )
