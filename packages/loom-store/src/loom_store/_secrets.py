"""Keeping credentials out of the store, its error messages, its logs and its repr.

Two jobs:

* :func:`scrub_config` replaces every value whose key names a credential (``api_key``,
  ``Authorization``, ``access_token``, ``client_secret``, ``password``…), at any depth, by
  ``"***"``, and the password of any URL found in a string value, before a run's
  configuration is written to ``loom_runs``.
* :class:`Redactor` knows the secrets of one store URL (its password, credential-like query
  parameters) and removes them from any text, such as a driver's exception message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL

__all__ = ["MASK", "Redactor", "is_credential_key", "render_url", "scrub_config"]

MASK = "***"

# A key names a credential when, lower-cased with separators removed, it contains one of these
# ("x-api-key" -> "xapikey", "sslpassword", "client_secret")…
_CREDENTIAL_PARTS = (
    "apikey",
    "authorization",
    "password",
    "passwd",
    "secret",
    "credential",
    "privatekey",
    "accesskey",
)
# …or when one of its words is one of these (words, so that "max_tokens" stays visible).
_CREDENTIAL_WORDS = frozenset({"token", "auth", "cookie"})
_WORD_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z]|\b|[^A-Za-z]|$)|[A-Z]?[a-z]+|[0-9]+|[A-Z]+")
# scheme://user:password@host -> scheme://user:***@host
_URL_PASSWORD_RE = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+(?=@)")
# password=... in a libpq conninfo string or a query string
_KEYWORD_PASSWORD_RE = re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)(?:'[^']*'|[^\s&'\"]+)")


def is_credential_key(key: str) -> bool:
    """Whether a mapping key names a credential (``api_key``, ``X-Api-Key``, ``authToken``…).

    True when the key, lower-cased without separators, contains ``apikey``, ``authorization``,
    ``password``, ``passwd``, ``secret``, ``credential``, ``privatekey`` or ``accesskey``, or
    when one of its words (split on separators and camelCase) is ``token``, ``auth`` or
    ``cookie``. ``max_tokens`` does not match: ``tokens`` is a count, ``token`` a secret.
    """
    words = [w.lower() for w in _WORD_RE.findall(key)]
    joined = "".join(words)
    return any(part in joined for part in _CREDENTIAL_PARTS) or any(
        w in _CREDENTIAL_WORDS for w in words
    )


def _scrub_string(value: str) -> str:
    if "://" in value:
        value = _URL_PASSWORD_RE.sub(lambda m: m["head"] + MASK, value)
    return value


def scrub_config(value: Any) -> Any:
    """Return a copy of ``value`` with every credential replaced by ``"***"``.

    Mappings are walked at any depth (lists and tuples too); a value whose key names a
    credential (see :func:`is_credential_key`) becomes ``"***"`` whatever its type, and a URL
    password inside any string becomes ``***``. Other values are returned as they are.
    """
    if isinstance(value, Mapping):
        return {
            key: MASK if isinstance(key, str) and is_credential_key(key) else scrub_config(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_config(item) for item in value]
    if isinstance(value, str):
        return _scrub_string(value)
    return value


class Redactor:
    """Removes one store URL's secrets from text.

    Args:
        url: The store's URL; its password and credential-like query values are the secrets.
    """

    def __init__(self, url: URL | None) -> None:
        secrets: set[str] = set()
        if url is not None:
            if url.password:
                secrets.add(str(url.password))
            for key, val in url.query.items():
                if is_credential_key(key):
                    values: Iterable[str] = (val,) if isinstance(val, str) else val
                    secrets.update(v for v in values if v)
        # Also the forms the secret takes inside a rendered URL or conninfo string.
        variants = set(secrets)
        for secret in secrets:
            variants.update({quote(secret, safe=""), quote_plus(secret)})
        # Longest first, so that a secret containing another is replaced whole.
        self._secrets = sorted((s for s in variants if s), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """Return ``text`` with every known secret and any URL password masked."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        text = _URL_PASSWORD_RE.sub(lambda m: m["head"] + MASK, text)
        return _KEYWORD_PASSWORD_RE.sub(lambda m: m["head"] + MASK, text)


def render_url(url: URL) -> str:
    """Render ``url`` safe to print: password and credential-like query values masked."""
    query = {key: (MASK if is_credential_key(key) else val) for key, val in url.query.items()}
    rendered = url.set(query=query).render_as_string(hide_password=True)
    return rendered.replace("%2A%2A%2A", MASK)  # the query's mask, percent-encoded
