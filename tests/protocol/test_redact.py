"""The one redaction module: secret names, URLs, mappings, headers and free text."""

from __future__ import annotations

import pytest

from loom_protocol import (
    MASK,
    is_secret_name,
    redact_headers,
    redact_text,
    redact_url,
    redact_value,
)

SECRET_NAMES = [
    # the list
    "subscription_key",
    "Ocp-Apim-Subscription-Key",
    "key",
    "bearer",
    "jwt",
    "sig",
    "pass",
    # the api_key / authorization / token / secret / password family
    "api_key",
    "apiKey",
    "API_KEY",
    "APIKEY",
    "OPENAI_API_KEY",
    "x-api-key",
    "api-key",
    "Authorization",
    "proxy-authorization",
    "token",
    "access_token",
    "authToken",
    "ACCESSTOKEN",
    "hf_token",
    "x-auth-token",
    "secret",
    "client_secret",
    "secretKey",
    "password",
    "DB_PASSWORD",
    "sslpassword",
    "passwd",
    "db_pass",
    "signature",
    "x-amz-signature",
    "credential",
    "credentials",
    "private_key",
    "aws_access_key",
    "auth",
    "Cookie",
    "Set-Cookie",
    "SUBSCRIPTIONKEY",
    "subscriptionKey",
    "jwt_assertion",
    "Bearer-Token",
]

# Names that look close to a secret and are not: hiding them would also merge cache entries,
# since the fingerprint is computed from the masked configuration.
ORDINARY_NAMES = [
    "max_tokens",
    "max_completion_tokens",
    "budget_tokens",
    "tokens",
    "stop_token_ids",
    "top_k",
    "top_p",
    "keywords",
    "keyword",
    "key_id",
    "prompt_cache_key",
    "top_logprobs",
    "logit_bias",
    "stop_sequences",
    "model",
    "temperature",
    "monkey",
    "author",
    "passage",
    "bypass",
    "compass",
    "signal",
    "design",
    "seed",
    "",
    "-",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pa%40ss@host/v1", "https://user:***@host/v1"),
        ("https://user:p@ss@host/v1", "https://user:***@host/v1"),
        ("https://sk-token-123@host/v1", "https://***@host/v1"),
        (
            "https://r.openai.azure.com/openai?api-version=2024-06-01&api-key=K123",
            "https://r.openai.azure.com/openai?api-version=2024-06-01&api-key=***",
        ),
        ("https://h/x?sig=abc&sv=2024&se=1#frag", "https://h/x?sig=***&sv=2024&se=1#frag"),
        ("https://h/x?code=1&key=", "https://h/x?code=1&key=***"),
        ("https://h/v1", "https://h/v1"),
        ("http://127.0.0.1:8000/v1?x=1", "http://127.0.0.1:8000/v1?x=1"),
        ("not a url?token=abc", "not a url?token=***"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_value_is_deep_and_leaves_the_input_alone() -> None:
    config = {
        "temperature": 0.2,
        "max_tokens": 100,
        "top_k": 40,
        "keywords": ["a", "b"],
        "extra_body": {
            "Ocp-Apim-Subscription-Key": "SUB-SECRET",
            "nested": [{"jwt": {"even": "a dict"}}, ("t", {"pass": 1234})],
            "endpoint": "https://u:PW-SECRET@h/v1?sig=SIG-SECRET",
        },
        1: "a non-string key is kept",
    }
    shown = redact_value(config)
    assert shown == {
        "temperature": 0.2,
        "max_tokens": 100,
        "top_k": 40,
        "keywords": ["a", "b"],
        "extra_body": {
            "Ocp-Apim-Subscription-Key": MASK,
            "nested": [{"jwt": MASK}, ["t", {"pass": MASK}]],
            "endpoint": "https://u:***@h/v1?sig=***",
        },
        1: "a non-string key is kept",
    }
    assert "SECRET" not in repr(shown)
    assert config["extra_body"]["Ocp-Apim-Subscription-Key"] == "SUB-SECRET"  # type: ignore[index]


def test_redact_headers() -> None:
    headers = {"Authorization": "Bearer X", "api-key": "Y", "anthropic-beta": "tools"}
    assert redact_headers(headers) == {
        "Authorization": MASK,
        "api-key": MASK,
        "anthropic-beta": "tools",
    }


def test_redact_text_masks_known_secrets_and_url_credentials() -> None:
    text = (
        "cannot reach https://bob:hunter22@db.example.com/x?api-key=QUERYSECRET&v=1 "
        "with sk-KEY-1234 (password=p4ss, max_tokens=5, token='a b')"
    )
    shown = redact_text(text, ["sk-KEY-1234", None, "ab"])
    for secret in ("hunter22", "QUERYSECRET", "sk-KEY-1234", "p4ss", "'a b'"):
        assert secret not in shown
    assert "max_tokens=5" in shown
    assert "v=1" in shown
    # Secrets shorter than 4 characters are not replaced: they would mask ordinary words.
    assert redact_text("a cab", ["ab"]) == "a cab"


def test_redaction_survives_odd_input() -> None:
    deep: object = {"token": "DEEP-SECRET"}
    for _ in range(200):
        deep = {"k": [deep]}
    assert "DEEP-SECRET" not in repr(redact_value(deep))
    assert redact_url("") == ""
    assert redact_url("http://[::1") == "http://[::1"
    assert redact_text("") == ""


def test_a_value_too_deep_to_walk_is_masked_whole() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    assert redact_value({"x": cycle}) == MASK
    deep: object = {"token": "DEEP-SECRET"}
    for _ in range(5000):
        deep = [deep]
    assert redact_value(deep) == MASK
