"""``Endpoint``: one server of an endpoint list, and the checks of a whole list.

A list is checked whole, before anything is built: an empty list, a duplicate URL, a weight
that is not a finite number > 0 (a bool is no weight), a URL that is no usable ``http(s)://``
URL, a key given both ways or an unset key variable each raise
:class:`~loom_protocol.LoomUsageError` naming the entry (``endpoints[2]``) and its URL with
secrets masked. A key is never shown: not in a message, not in a ``repr``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loom_protocol import (
    MASK,
    LoomUsageError,
    check_header,
    check_http_url,
    is_number,
    redact_url,
)

__all__ = ["MAX_ENDPOINTS", "Endpoint", "check_endpoints"]

#: The most endpoints one list may hold: far above any fleet, far below a list built by mistake.
MAX_ENDPOINTS = 256

_FIELDS = ("url", "api_key", "api_key_env", "weight")


@dataclass(frozen=True, slots=True, repr=False)
class Endpoint:
    """One OpenAI-compatible server of an endpoint list (or of the provider the model names).

    Args:
        url: The server's base URL, e.g. ``http://gpu-3:8000/v1``.
        api_key: Its key; ``None`` sends none (local servers) unless ``api_key_env`` is set or
            the list's shared ``api_key`` (or the provider's environment variable) applies.
        api_key_env: The name of an environment variable holding its key, read when the
            backend is built (so the key itself never sits in your code).
        weight: Its share of the requests, relative to the others (a finite number > 0).

    Raises:
        LoomUsageError: A bad url, weight or key, or both ``api_key`` and ``api_key_env``.
    """

    url: str
    api_key: str | None = None
    api_key_env: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        _check(self.url, self.api_key, self.api_key_env, self.weight, "Endpoint")

    @property
    def name(self) -> str:
        """The URL as shown in logs and messages (secret query values masked)."""
        return redact_url(self.url)

    def key(self, where: str = "Endpoint") -> str | None:
        """The key to send: ``api_key``, or the value of ``api_key_env`` read now.

        Raises:
            LoomUsageError: ``api_key_env`` names a variable that is not set (or empty), or
                whose value cannot go into a header.
        """
        if self.api_key_env is None:
            return self.api_key
        value = os.environ.get(self.api_key_env)
        if not value:
            raise LoomUsageError(
                f"{where} ({self.name}): the environment variable {self.api_key_env} "
                "(api_key_env) is not set"
            )
        return check_header(f"{where} ({self.name}): the value of {self.api_key_env}", value)

    def __repr__(self) -> str:
        # Never a secret: a repr ends up in logs and tracebacks.
        key = repr(MASK) if self.api_key else "None"
        shown = f"url={self.name!r}, api_key={key}"
        if self.api_key_env is not None:
            shown += f", api_key_env={self.api_key_env!r}"
        return f"Endpoint({shown}, weight={self.weight:g})"


def _check(url: Any, api_key: Any, api_key_env: Any, weight: Any, where: str) -> None:
    if not isinstance(url, str):
        raise LoomUsageError(
            f"{where}: url must be an http(s):// URL string, got {type(url).__name__}"
        )
    check_http_url(f"{where}: url", url)
    shown = f"{where} ({redact_url(url)})"
    if not (is_number(weight) and math.isfinite(weight) and weight > 0):
        raise LoomUsageError(f"{shown}: weight must be a finite number > 0, got {weight!r}")
    if api_key is not None:
        check_header(f"{shown}: api_key", api_key)
        if api_key_env is not None:
            raise LoomUsageError(f"{shown}: give api_key or api_key_env, not both")
    env = api_key_env
    if env is not None and (
        not isinstance(env, str) or not env or "=" in env or "\0" in env or env != env.strip()
    ):
        raise LoomUsageError(
            f"{shown}: api_key_env must be the name of an environment variable, got {env!r}"
        )


def _entry(item: object, where: str) -> Endpoint:
    """One entry of a list: an Endpoint, a URL string, or a mapping of Endpoint's fields."""
    if isinstance(item, Endpoint):
        # Checked again, under this entry's name: a frozen dataclass can still be forced.
        _check(item.url, item.api_key, item.api_key_env, item.weight, where)
        return item
    if isinstance(item, str):
        return _made(where, url=item)
    if isinstance(item, Mapping):
        unknown = sorted(str(k) for k in item if k not in _FIELDS)
        if unknown:
            raise LoomUsageError(
                f"{where}: unknown field {unknown[0]!r}; an endpoint has {', '.join(_FIELDS)}"
            )
        if "url" not in item:
            raise LoomUsageError(f"{where}: no 'url'")
        return _made(where, **{str(k): v for k, v in item.items()})
    raise LoomUsageError(
        f"{where} must be an Endpoint, a URL string or a dict with 'url', got {type(item).__name__}"
    )


def _made(where: str, **fields: Any) -> Endpoint:
    """An Endpoint from ``fields``, its problems named after ``where`` (not "Endpoint")."""
    values = {
        name: fields.get(name, Endpoint.__dataclass_fields__[name].default) for name in _FIELDS
    }
    _check(values["url"], values["api_key"], values["api_key_env"], values["weight"], where)
    endpoint = object.__new__(Endpoint)
    for name, value in values.items():
        object.__setattr__(endpoint, name, value)
    return endpoint


def _identity(url: str) -> str:
    """The URL as a server identity: scheme and host in lower case, no trailing slash."""
    parts = check_http_url("url", url)
    netloc = parts.netloc.lower()
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}?{parts.query}"


def check_endpoints(value: object, where: str = "endpoints") -> tuple[Endpoint, ...]:
    """``value`` as a checked tuple of :class:`Endpoint`.

    Args:
        value: A list or tuple of Endpoints, URL strings, or dicts of Endpoint's fields.
        where: The argument's name, for the messages (``"base_url"``, ``"endpoints"``).

    Raises:
        LoomUsageError: Not a list (a single string, a dict, a set), empty, more than
            :data:`MAX_ENDPOINTS` entries, a bad entry (named ``where[i]``), or a URL given
            twice.
    """
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple):
        raise LoomUsageError(
            f"{where} must be a list of endpoints (URLs, Endpoint objects or dicts), "
            f"got {type(value).__name__}"
        )
    if not value:
        raise LoomUsageError(f"{where} is an empty list: give at least one endpoint")
    if len(value) > MAX_ENDPOINTS:
        raise LoomUsageError(
            f"{where} has {len(value)} entries; at most {MAX_ENDPOINTS} are supported"
        )
    endpoints = tuple(_entry(item, f"{where}[{i}]") for i, item in enumerate(value))
    _refuse_duplicates(endpoints, where)
    return endpoints


def _refuse_duplicates(endpoints: Iterable[Endpoint], where: str) -> None:
    seen: dict[str, int] = {}
    for i, endpoint in enumerate(endpoints):
        key = _identity(endpoint.url)
        if key in seen:
            raise LoomUsageError(
                f"{where}[{i}] ({endpoint.name}) is the same server as {where}[{seen[key]}]: "
                "give each URL once (use weight= to send it a larger share)"
            )
        seen[key] = i
