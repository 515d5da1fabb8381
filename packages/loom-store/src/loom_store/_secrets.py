"""Keeping credentials out of the store, its error messages, its logs and its repr.

The rules are loom-protocol's (:mod:`loom_protocol` ``redact_*``), shared with the backends
and the engine, so a name is a credential in the store exactly when it is one everywhere:

* :func:`scrub_config` replaces every value whose key names a credential (``api_key``,
  ``Authorization``, ``subscription_key``, ``client_secret``, ``password``…), at any depth, by
  ``"***"``, and the credentials of any URL found in a string value, before a run's
  configuration is written to ``loom_runs``.
* :class:`Redactor` knows the secrets of one store URL (its password, credential-like query
  parameters) and removes them from any text, such as a driver's exception message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL

from loom_protocol import MASK, is_secret_name, redact_text, redact_value

__all__ = ["MASK", "Redactor", "is_credential_key", "render_url", "scrub_config"]

# password=... in a libpq conninfo string, also when quoted with spaces inside
_KEYWORD_PASSWORD_RE = re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)(?:'[^']*'|[^\s&'\"]+)")


def is_credential_key(key: str) -> bool:
    """Whether a mapping key names a credential: :func:`loom_protocol.is_secret_name`."""
    return is_secret_name(key)


def scrub_config(value: Any) -> Any:
    """Return a copy of ``value`` with every credential replaced by ``"***"``.

    Mappings are walked at any depth (lists and tuples too); a value whose key names a
    credential (see :func:`loom_protocol.is_secret_name`) becomes ``"***"`` whatever its type,
    and URL credentials inside any string are masked. Other values are returned as they are.
    """
    return redact_value(value)


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
                if is_secret_name(key):
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
        text = redact_text(text)
        return _KEYWORD_PASSWORD_RE.sub(lambda m: m["head"] + MASK, text)


def render_url(url: URL) -> str:
    """Render ``url`` safe to print: password and credential-like query values masked."""
    query = {key: (MASK if is_secret_name(key) else val) for key, val in url.query.items()}
    rendered = url.set(query=query).render_as_string(hide_password=True)
    return rendered.replace("%2A%2A%2A", MASK)  # the query's mask, percent-encoded
