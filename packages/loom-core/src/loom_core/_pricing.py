"""A loom's prices, and the token estimates made before a call (budget, dry run).

:class:`Pricer` resolves a model's price once (the user's ``prices=`` first, then the bundled
table of :mod:`loom_protocol`) and turns a usage into dollars. :func:`prompt_tokens` is the
documented estimate of a prompt's size before it is sent: about one token per four characters
of text (messages and the response format), four tokens per message, 1,000 per image.
:func:`output_tokens` is the estimate of an answer's size: ``max_tokens`` when set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from loom_protocol import (
    ChatRequest,
    ImagePart,
    Message,
    ModelPrice,
    PriceSource,
    Usage,
    find_price,
    usage_cost,
)

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "IMAGE_TOKENS",
    "Pricer",
    "output_tokens",
    "prompt_tokens",
]

#: Tokens counted per image (about what a high-detail image costs with the major providers).
IMAGE_TOKENS = 1000

#: The answer's size assumed when neither ``max_tokens`` nor an answer seen says better.
DEFAULT_OUTPUT_TOKENS = 1024

_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4  # role markers and separators the provider adds around each message


def prompt_tokens(
    messages: Sequence[Message], response_format: Mapping[str, Any] | None, images: int = 0
) -> int:
    """The estimated input tokens of ``messages`` (see the module docstring).

    Args:
        messages: The request's messages; their image parts count ``IMAGE_TOKENS`` each.
        response_format: The request's response format (its JSON is sent too).
        images: Images not (yet) in ``messages``: a dry run counts an input's image
            references without reading the files.
    """
    chars = 0
    for message in messages:
        if isinstance(message.content, str):
            chars += len(message.content)
            continue
        for part in message.content:
            if isinstance(part, ImagePart):
                images += 1
            else:
                chars += len(part.text)
    if response_format is not None:
        chars += len(json.dumps(response_format))
    return (
        math.ceil(chars / _CHARS_PER_TOKEN)
        + _TOKENS_PER_MESSAGE * len(messages)
        + IMAGE_TOKENS * images
    )


def output_tokens(request: ChatRequest) -> int | None:
    """The most tokens the answer to ``request`` may have (``max_tokens`` or the param
    ``max_completion_tokens``), or ``None`` when the request sets no bound."""
    if request.max_tokens is not None:
        return request.max_tokens
    bound = request.params.get("max_completion_tokens")
    return bound if isinstance(bound, int) and not isinstance(bound, bool) and bound > 0 else None


class Pricer:
    """The prices a loom knows: the user's table, then the bundled one.

    Args:
        prices: The user's table, already checked (``loom_protocol.check_prices``).
        model: The loom's model name (as given to TaskLoom).
    """

    __slots__ = ("_found", "model", "prices")

    def __init__(self, prices: Mapping[str, ModelPrice], model: str) -> None:
        self.prices = dict(prices)
        self.model = model
        self._found: dict[str, tuple[ModelPrice, PriceSource, str] | None] = {}

    def find(self, model: str | None) -> tuple[ModelPrice, PriceSource, str] | None:
        """The price of ``model`` and where it came from (``None``: unknown)."""
        if model is None:
            return None
        found = self._found.get(model, False)
        if found is False:
            found = self._found[model] = find_price(model, self.prices)
        return found  # type: ignore[return-value]

    def price_of(self, answered: str | None) -> ModelPrice | None:
        """The price of a call answered by ``answered``: that model's, else the loom's.

        A server may answer with a longer name than the one asked (a dated snapshot, a
        local server's path): the answer's name is tried first, then the loom's own.
        """
        found = self.find(answered) or self.find(self.model)
        return None if found is None else found[0]

    def cost(
        self, usage: Usage | None, answered: str | None, *, batch: bool = False
    ) -> float | None:
        """What ``usage`` cost in dollars (``None``: no usage, or no known price)."""
        if usage is None:
            return None
        price = self.price_of(answered)
        return None if price is None else usage_cost(usage, price, batch=batch)
