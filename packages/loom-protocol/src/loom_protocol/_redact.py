"""Keeping credentials out of reprs, logs, error messages and stored configurations.

One set of rules for every package (backends, store, engine):

* :func:`is_secret_name` says whether a key, header or query parameter names a credential;
* :func:`redact_url` masks a URL's userinfo password and its secret query values;
* :func:`redact_value` masks every value under a secret name in a mapping, at any depth, and
  the URLs found in any string;
* :func:`redact_headers` masks secret header values;
* :func:`redact_text` masks known secret strings and URL credentials inside free text.

Everything is masked as ``"***"`` (:data:`MASK`). Functions are pure and never raise on odd
input: a value they cannot parse is returned masked or unchanged, never half-shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

__all__ = [
    "MASK",
    "is_secret_name",
    "redact_headers",
    "redact_text",
    "redact_url",
    "redact_value",
]

#: What a secret is replaced by.
MASK = "***"

# A name is split into lower-case words on separators and camelCase ("Ocp-Apim-Subscription-Key"
# -> ocp apim subscription key, "authToken" -> auth token). It names a secret when...
# ...the words joined contain one of these (also catches "APIKEY", "sslpassword", "x_api_key");
_SECRET_PARTS = (
    "apikey",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "credential",
    "signature",
    "authorization",
    "privatekey",
    "accesskey",
    "subscriptionkey",
    "accesstoken",
    "refreshtoken",
    "authtoken",
    "apitoken",
    "bearertoken",
    "sessiontoken",
    "securitytoken",
    "idtoken",
    "cookie",
)
# ...or one of its words is one of these, anywhere ("auth_header", "jwt_value");
_SECRET_WORDS = frozenset({"auth", "bearer", "jwt", "pwd"})
# ...or its LAST word is one of these ("subscription_key", "hf_token", "db_pass", "url_sig").
# Last word only, so that counts and ids stay visible: "max_tokens", "stop_token_ids",
# "key_id", "top_k", "keywords" are not secrets.
_SECRET_LAST_WORDS = frozenset({"key", "token", "pass", "sig"})
# Public parameters that the rules above would hide.
_NOT_SECRET = frozenset({"promptcachekey"})

_WORD_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z]|\b|[^A-Za-z]|$)|[A-Z]?[a-z]+|[0-9]+|[A-Z]+")
# scheme://user:password@host -> scheme://user:***@host (in free text)
_URL_PASSWORD_RE = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@?#]*:)[^@\s/?#]+(?=@)")
# scheme://token@host -> scheme://***@host: a bare userinfo is usually a token
_URL_USERINFO_RE = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s:@?#]+(?=@)")
# name=value in a query string or a conninfo string (in free text)
_PARAM_RE = re.compile(r"(?P<head>(?P<name>[A-Za-z][\w.\-]*)\s*=\s*)(?P<value>'[^']*'|[^\s&'\"#]+)")


def is_secret_name(name: str) -> bool:
    """Whether ``name`` (a key, a header, a query parameter) names a credential.

    Matching folds case and ignores ``-``, ``_``, ``.`` and camelCase boundaries. A name is a
    secret when its words joined contain ``apikey``, ``password``, ``passwd``, ``secret``,
    ``credential``, ``signature``, ``authorization``, ``privatekey``, ``accesskey``,
    ``subscriptionkey``, ``cookie`` or a ``…token`` of a known kind (``accesstoken``,
    ``authtoken``…); when one of its words is ``auth``, ``bearer``, ``jwt`` or ``pwd``; or when
    its last word is ``key``, ``token``, ``pass`` or ``sig``. ``max_tokens``, ``top_k``,
    ``keywords``, ``stop_token_ids`` and ``prompt_cache_key`` are not secrets.

    >>> [is_secret_name(n) for n in ("Ocp-Apim-Subscription-Key", "api_key", "max_tokens")]
    [True, True, False]
    """
    words = [w.lower() for w in _WORD_RE.findall(name)]
    if not words:
        return False
    joined = "".join(words)
    if joined in _NOT_SECRET:
        return False
    return (
        any(part in joined for part in _SECRET_PARTS)
        or any(w in _SECRET_WORDS for w in words)
        or words[-1] in _SECRET_LAST_WORDS
    )


def _redact_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        if eq and is_secret_name(unquote_plus(name)):
            item = f"{name}={MASK}"
        parts.append(item)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """``url`` with its userinfo password and secret query values masked.

    ``https://user:pw@host/v1?api-key=K&v=1`` becomes ``https://user:***@host/v1?api-key=***&v=1``;
    a userinfo without a password (``https://TOKEN@host``) is masked whole, since a bare
    userinfo is usually a token. Everything else is kept as written.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        return _redact_query_part(url)
    netloc_end = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if at != -1:
            netloc_end = min(netloc_end, at)
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    userinfo, at_sign, host = netloc.rpartition("@")
    if at_sign:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    return f"{head}://{netloc}{_redact_query_part(tail)}"


def _redact_query_part(tail: str) -> str:
    path, qmark, query = tail.partition("?")
    if not qmark:
        return tail
    query, hash_sign, fragment = query.partition("#")
    return f"{path}?{_redact_query(query)}{hash_sign}{fragment}"


def redact_value(value: Any) -> Any:
    """A copy of ``value`` with every credential masked, at any depth.

    In mappings, the value under a secret name (:func:`is_secret_name`) becomes ``"***"``
    whatever its type; lists and tuples are walked (tuples come back as lists); a string that
    holds a URL has its credentials masked (:func:`redact_text`). Other values are returned as
    they are. Non-string keys are kept. A value nested too deep to walk (or a cycle) comes
    back as ``"***"`` whole: never half-shown.
    """
    try:
        return _redact_value(value)
    except RecursionError:
        return MASK


def _redact_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            key: MASK if isinstance(key, str) and is_secret_name(key) else _redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return redact_text(value)
    return value


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with the values of secret headers (``Authorization``, ``x-api-key``…) masked."""
    return {
        str(name): MASK if is_secret_name(str(name)) else str(value)
        for name, value in headers.items()
    }


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with each of ``secrets`` and every URL credential in it masked.

    Known secrets (4 characters or more: shorter strings would mask ordinary words) are
    replaced wherever they occur, longest first; then URL passwords (``scheme://user:pw@``),
    bare URL userinfo (``scheme://token@``) and ``name=value`` pairs whose name is a secret
    (``?api-key=…``, ``password=…``).
    """
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    if "://" in text:
        text = _URL_PASSWORD_RE.sub(lambda m: m["head"] + MASK, text)
        text = _URL_USERINFO_RE.sub(lambda m: m["head"] + MASK, text)
    if "=" in text:
        text = _PARAM_RE.sub(
            lambda m: m["head"] + MASK if is_secret_name(m["name"]) else m[0], text
        )
    return text
