"""The OpenAI chat-completions wire format: request validation and response objects (pure).

Validation is hand-written rather than a pydantic model so that every rejection names the
offending ``param`` the way OpenAI's API does (``messages[2].content``), and so that the many
fields OpenAI clients send which the gateway does not use (``temperature``, ``top_p``, ``user``,
``stop`` ...) are accepted and ignored rather than refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from phoenix_operator.gateway.errors import GatewayError, invalid

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
#: Numeric sampling fields that are accepted (type-checked) and otherwise ignored.
IGNORED_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request; ``max_tokens`` is already capped by the gateway's limit."""

    model: str
    messages: tuple[Message, ...]
    stream: bool
    max_tokens: int
    include_usage: bool

    @property
    def query(self) -> str:
        """The text the request is about: the last user message."""
        return next(m.content for m in reversed(self.messages) if m.role == "user")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _content_text(content: Any, param: str) -> str:
    """A message's text: a string, null, or a list of ``{"type": "text", "text": ...}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                raise invalid(
                    f"{param}[{j}] must be an object with a 'type'", f"{param}[{j}]", "invalid_type"
                )
            if part["type"] != "text":
                raise invalid(
                    f"{param}[{j}]: content part type {part['type']!r} is not supported (text only)",
                    f"{param}[{j}].type",
                )
            if not isinstance(part.get("text"), str):
                raise invalid(f"{param}[{j}].text must be a string", f"{param}[{j}].text", "invalid_type")
            texts.append(part["text"])
        return "\n".join(texts)
    raise invalid(f"{param} must be a string or a list of content parts", param, "invalid_type")


def _messages(raw: Any) -> tuple[Message, ...]:
    if raw is None:
        raise invalid("you must provide a 'messages' parameter", "messages", "missing_required_parameter")
    if not isinstance(raw, list):
        raise invalid("'messages' must be an array of message objects", "messages", "invalid_type")
    if not raw:
        raise invalid("'messages' must contain at least one message", "messages", "empty_array")
    messages = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, Mapping):
            raise invalid(f"{where} must be an object", where, "invalid_type")
        role = item.get("role")
        if not isinstance(role, str):
            raise invalid(f"{where}.role must be a string", f"{where}.role", "invalid_type")
        if role not in ROLES:
            raise invalid(f"{where}.role {role!r} is not one of {sorted(ROLES)}", f"{where}.role")
        messages.append(Message(role, _content_text(item.get("content"), f"{where}.content")))
    if not any(m.role == "user" and m.content.strip() for m in messages):
        raise invalid("'messages' must contain a user message with text", "messages")
    return tuple(messages)


def _max_tokens(payload: Mapping[str, Any], cap: int) -> int:
    chosen: int | None = None
    for key in ("max_completion_tokens", "max_tokens"):
        value = payload.get(key)
        if value is None:
            continue
        if not _is_int(value):
            raise invalid(f"'{key}' must be an integer", key, "invalid_type")
        if value < 1:
            raise invalid(f"'{key}' must be at least 1", key)
        chosen = value if chosen is None else chosen
    return min(chosen if chosen is not None else cap, cap)


def parse_chat_request(body: bytes, *, max_output_tokens: int) -> ChatRequest:
    """Validate a request body; raises :class:`GatewayError` (400) naming the bad parameter."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid(f"the request body is not valid JSON: {exc}", None, "invalid_json") from None
    if not isinstance(payload, dict):
        raise invalid("the request body must be a JSON object", None, "invalid_json")
    model = payload.get("model")
    if model is None:
        raise invalid("you must provide a 'model' parameter", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise invalid("'model' must be a non-empty string", "model", "invalid_type")
    messages = _messages(payload.get("messages"))
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("'stream' must be a boolean", "stream", "invalid_type")
    for key in IGNORED_NUMBERS:
        value = payload.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise invalid(f"'{key}' must be a number", key, "invalid_type")
    n = payload.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise invalid("only n=1 is supported", "n")
    options = payload.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, Mapping):
            raise invalid("'stream_options' must be an object", "stream_options", "invalid_type")
        usage = options.get("include_usage", False)
        if not isinstance(usage, bool):
            raise invalid(
                "'stream_options.include_usage' must be a boolean",
                "stream_options.include_usage",
                "invalid_type",
            )
        include_usage = usage
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        max_tokens=_max_tokens(payload, max_output_tokens),
        include_usage=include_usage,
    )


# --------------------------------------------------------------------------------------------
# prompt


def build_prompt(messages: Sequence[Message], passages: Sequence[str]) -> str:
    """One prompt text: a system message carrying the retrieved passages, then the conversation.

    The chat template of the real model is applied by its backend from this plain transcript;
    the passages go first so a KV-cache prefix is shared by requests that retrieve the same ones.
    """
    lines = []
    if passages:
        lines.append("system: Answer the customer using these knowledge-base passages when relevant:")
        lines += [f"- {p.strip()}" for p in passages]
    lines += [f"{m.role}: {m.content}" for m in messages]
    lines.append("assistant:")
    return "\n".join(lines)


def count_words(text: str) -> int:
    """Token counts in ``usage`` are whitespace words: the gateway has no LLM tokenizer."""
    return len(text.split())


# --------------------------------------------------------------------------------------------
# responses


def completion_chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: Mapping[str, Any],
    finish_reason: str | None = None,
    include_usage: bool = False,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage:
        chunk["usage"] = None
    return chunk


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def usage_chunk(completion_id: str, created: int, model: str, counts: Mapping[str, int]) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": dict(counts),
    }


def completion(
    completion_id: str, created: int, model: str, text: str, finish_reason: str, counts: Mapping[str, int]
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": dict(counts),
    }


def finish_reason(completion_tokens: int, max_tokens: int) -> str:
    return "length" if completion_tokens >= max_tokens else "stop"


def sse(data: Mapping[str, Any] | str) -> bytes:
    """One server-sent event as OpenAI streams them: ``data: <json>`` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


SSE_DONE = sse("[DONE]")


def models_list(model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(model, created)]}


def model_object(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "phoenix"}


def unknown_model(model: str, served: str) -> GatewayError:
    return GatewayError(
        404,
        f"the model {model!r} does not exist; this endpoint serves {served!r}",
        "invalid_request_error",
        "model",
        "model_not_found",
    )
