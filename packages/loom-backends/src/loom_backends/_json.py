"""JSON in and out of the HTTP backends: request bodies encoded, answers decoded.

Both run once per request, so both skip per-call setup: the encoder is built once (the json
module builds a new C encoder for every call whose options differ from its defaults, which
costs more than encoding a small body), and answers are parsed by pydantic's JSON parser, with
the json module as the judge of every text that parser refuses (measured on a 330-byte
``/chat/completions`` answer: ~2 µs against ~6 µs for ``json.loads`` of the bytes; the
``overhead`` scenario of ``scripts/bench.py``).
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import TypeAdapter

from ._errors import bad_answer_error, error_for_status

__all__ = ["encode_json", "loads_json", "parse_json_answer"]


def _json_encoder() -> Callable[[Any], str]:
    make = getattr(json.encoder, "c_make_encoder", None)
    fallback = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    if make is None:  # pragma: no cover - a Python build without the C accelerator
        return fallback

    def refuse(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    markers: dict[int, Any] = {}
    c_encode = make(
        markers, refuse, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )

    def encode(value: Any) -> str:
        if not isinstance(value, dict):
            return fallback(value)
        try:
            return "".join(c_encode(value, 0))
        except BaseException:
            # The C encoder leaves the circular-reference markers of a failed encoding
            # behind; one left over would make a later body look circular.
            markers.clear()
            raise

    return encode


#: ``encode_json(value)``: compact JSON text, non-ASCII kept as it is (``ensure_ascii=False``).
encode_json = _json_encoder()

_any_json = TypeAdapter(Any)


def loads_json(content: bytes) -> Any:
    """``json.loads(content)``, faster on the texts providers send.

    pydantic's parser answers the well-formed UTF-8 texts, on which it agrees with the json
    module; whatever it refuses (a byte order mark, lone surrogates, another encoding, very
    deep nesting, or no JSON at all) goes to ``json.loads``, whose answer or ``ValueError``
    stands.
    """
    try:
        return _any_json.validate_json(content)
    except ValueError:  # pydantic's ValidationError is a ValueError
        return json.loads(content)


def parse_json_answer(
    status: int, content: bytes, headers: Mapping[str, str], secrets: tuple[str | None, ...]
) -> dict[str, Any]:
    """Check the status and decode a JSON object body, or raise the table's BackendError."""
    if not 200 <= status <= 299:
        raise error_for_status(status, content.decode("utf-8", "replace"), headers, secrets=secrets)
    try:
        data = loads_json(content)
    except ValueError:
        # A 200 that is not JSON at all is nearly always a proxy or gateway hiccup
        # (an HTML error page, a cut body): trying again is worth it.
        raise bad_answer_error(
            "the provider's answer is not JSON",
            content.decode("utf-8", "replace"),
            status=status,
            retryable=True,
            secrets=secrets,
        ) from None
    if not isinstance(data, dict):
        raise bad_answer_error(
            "the provider's answer is not a JSON object",
            content.decode("utf-8", "replace"),
            status=status,
            secrets=secrets,
        )
    return data
