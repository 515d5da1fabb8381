"""Building one task's chat request: its messages (templates rendered, images loaded) and the
loom's generation settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loom_protocol import ChatRequest, ImagePart, Message, TextPart

from ._images import aload_image_url, image_refs
from ._render import PromptTemplate

__all__ = ["RequestBuilder"]


class RequestBuilder:
    """Renders an input into messages and wraps messages into a :class:`ChatRequest`.

    Args:
        model: The model name sent to the backend.
        prompt: The user message's template.
        system: The system message's template, if any.
        response_format: The output spec's ``response_format``.
        temperature: Sampling temperature, or ``None`` for the provider's default.
        max_tokens: The answer's token limit, or ``None``.
        params: Further generation parameters, passed through.
        image_root: Where relative image paths resolve (see :func:`~._images.load_image_url`).
    """

    __slots__ = (
        "_image_root",
        "_max_tokens",
        "_model",
        "_params",
        "_prompt",
        "_response_format",
        "_system",
        "_temperature",
    )

    def __init__(
        self,
        *,
        model: str,
        prompt: PromptTemplate,
        system: PromptTemplate | None,
        response_format: dict[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
        params: Mapping[str, Any],
        image_root: str | None,
    ) -> None:
        self._model = model
        self._prompt = prompt
        self._system = system
        self._response_format = response_format
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._params = dict(params)
        self._image_root = image_root

    @property
    def response_format(self) -> dict[str, Any] | None:
        """The response format every request carries."""
        return self._response_format

    @property
    def max_tokens(self) -> int | None:
        """The answer's token limit every request carries (``max_tokens``, else the param
        ``max_completion_tokens``), or ``None``."""
        if self._max_tokens is not None:
            return self._max_tokens
        bound = self._params.get("max_completion_tokens")
        return bound if isinstance(bound, int) and not isinstance(bound, bool) else None

    def messages(self, data: dict[str, Any]) -> tuple[list[Message], list[str]]:
        """The messages for an input with the user's text only, and the input's image refs.

        With image refs, pass both to :meth:`add_images`. Rendering needs no I/O, so an input
        without images costs no await.

        Raises:
            TemplateRenderError: A template fails for this input.
            ImageError: The input's ``images`` value is not a string or a list of strings.
        """
        messages: list[Message] = []
        if self._system is not None:
            messages.append(Message(role="system", content=self._system.render(data)))
        messages.append(Message(role="user", content=self._prompt.render(data)))
        return messages, image_refs(data.get("images"))

    async def add_images(self, messages: list[Message], refs: list[str]) -> list[Message]:
        """``messages`` with the images of ``refs`` loaded into the last (the user's) message.

        Raises:
            ImageError: An image cannot be used (see :func:`~._images.load_image_url`).
        """
        text = messages[-1].content
        assert isinstance(text, str)  # as messages() built it
        urls = [await aload_image_url(ref, image_root=self._image_root) for ref in refs]
        parts: list[TextPart | ImagePart] = [TextPart(text=text)]
        parts.extend(ImagePart(url=url) for url in urls)
        return [*messages[:-1], Message(role="user", content=parts)]

    def request(self, messages: list[Message]) -> ChatRequest:
        """The request that sends ``messages`` with the loom's settings."""
        return ChatRequest(
            model=self._model,
            messages=messages,
            temperature=self._temperature,
            max_tokens=self._max_tokens,
            response_format=self._response_format,
            params=self._params,
        )
