"""The gateway's pure parts: request validation, prompt building, error mapping, settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from phoenix_operator.gateway import protocol
from phoenix_operator.gateway.errors import GatewayError
from phoenix_operator.gateway.local import URGENT_INTENTS, local_spec
from phoenix_operator.gateway.settings import MODEL_IO_LAYOUTS, GatewaySettings, SpecFileError, load_spec
from phoenix_operator.gateway.upstream import classify_triton_error

ROOT = Path(__file__).resolve().parent.parent


def parse(payload: Any, cap: int = 100) -> protocol.ChatRequest:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return protocol.parse_chat_request(body, max_output_tokens=cap)


def rejection(payload: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse(payload)
    assert info.value.status == 400
    return info.value


OK = {"model": "m", "messages": [{"role": "user", "content": "my card was stolen"}]}


def test_valid_request_uses_last_user_message_and_caps_max_tokens() -> None:
    chat = parse(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]},
            ],
            "max_completion_tokens": 1000,
            "temperature": 0.2,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "ignored",
        },
        cap=64,
    )
    assert chat.query == "second"
    assert chat.max_tokens == 64
    assert chat.stream and chat.include_usage
    assert parse({**OK, "max_tokens": 7}).max_tokens == 7
    assert parse(OK, cap=33).max_tokens == 33


@pytest.mark.parametrize(
    ("payload", "param", "code"),
    [
        (b"{not json", None, "invalid_json"),
        (b"\xff\xfe", None, "invalid_json"),
        ([1, 2], None, "invalid_json"),
        ({"messages": OK["messages"]}, "model", "missing_required_parameter"),
        ({"model": 3, "messages": OK["messages"]}, "model", "invalid_type"),
        ({"model": "m"}, "messages", "missing_required_parameter"),
        ({"model": "m", "messages": []}, "messages", "empty_array"),
        ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "m", "messages": [{"role": "system", "content": "x"}]}, "messages", "invalid_value"),
        (
            {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
        ({**OK, "stream": "yes"}, "stream", "invalid_type"),
        ({**OK, "max_tokens": "10"}, "max_tokens", "invalid_type"),
        ({**OK, "max_tokens": True}, "max_tokens", "invalid_type"),
        ({**OK, "max_completion_tokens": 0}, "max_completion_tokens", "invalid_value"),
        ({**OK, "temperature": "hot"}, "temperature", "invalid_type"),
        ({**OK, "stream_options": {"include_usage": 1}}, "stream_options.include_usage", "invalid_type"),
        ({**OK, "n": 2}, "n", "invalid_value"),
    ],
)
def test_bad_requests_name_the_param(payload: Any, param: str | None, code: str) -> None:
    error = rejection(payload)
    assert (error.param, error.code) == (param, code)
    body = error.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error" and body["message"]


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_json_is_accepted_or_rejected_with_400(value: Any) -> None:
    try:
        chat = parse({"model": "m", "messages": value})
    except GatewayError as error:
        assert error.status == 400 and error.param is not None and error.param.startswith("messages")
    else:
        assert chat.query.strip()


def test_prompt_puts_passages_in_a_system_message_before_the_conversation() -> None:
    messages = [protocol.Message("user", "card stolen"), protocol.Message("assistant", "sorry")]
    prompt = protocol.build_prompt(messages, ["Freeze it in the app.", "Call us."])
    lines = prompt.splitlines()
    assert lines[0].startswith("system:")
    assert lines[1:3] == ["- Freeze it in the app.", "- Call us."]
    assert lines[3:] == ["user: card stolen", "assistant: sorry", "assistant:"]
    assert not protocol.build_prompt(messages, []).startswith("system:")


def test_stream_objects_have_openai_shape() -> None:
    chunk = protocol.completion_chunk("id1", 1, "m", {"content": "hi"}, None, include_usage=True)
    assert chunk["object"] == "chat.completion.chunk" and chunk["usage"] is None
    assert chunk["choices"][0] == {
        "index": 0,
        "delta": {"content": "hi"},
        "logprobs": None,
        "finish_reason": None,
    }
    assert protocol.sse(chunk).startswith(b"data: {") and protocol.sse(chunk).endswith(b"\n\n")
    assert protocol.SSE_DONE == b"data: [DONE]\n\n"
    assert protocol.finish_reason(5, 5) == "length" and protocol.finish_reason(4, 5) == "stop"
    assert protocol.usage(3, 4)["total_tokens"] == 7


@pytest.mark.parametrize(
    ("message", "status", "code"),
    [
        ("Request timeout expired", 504, "queue_timeout"),
        ("Exceeds maximum queue size", 429, "queue_full"),
        ("Request for unknown model: 'x' is not found", 503, "upstream_unavailable"),
        ("Failed to process the request(s) for model 'x': boom", 502, "upstream_error"),
    ],
)
def test_triton_errors_map_to_statuses(message: str, status: int, code: str) -> None:
    error = classify_triton_error(message)
    assert (error.status, error.code) == (status, code)


def test_settings_derive_names_and_priority_from_spec() -> None:
    spec = local_spec(bulk_queue_timeout_us=250_000)
    settings = GatewaySettings(spec=spec, triton_url="h:1")
    assert settings.served_model_name == "emulated_chat" == settings.triton_model
    assert settings.io == MODEL_IO_LAYOUTS["phoenix"]
    assert settings.queue_timeout_us("bulk") == 250_000
    assert settings.queue_timeout_us("urgent") is None
    assert not settings.retrieval_enabled
    vllm = spec.model_copy(update={"model": spec.model.model_copy(update={"backend": "vllm"})})
    assert GatewaySettings(spec=vllm, triton_url="h:1").io.prompt == "text_input"


def test_local_spec_routes_the_examples_urgent_intents() -> None:
    example = list(yaml.safe_load_all((ROOT / "examples" / "production.yaml").read_text()))[1]
    routes = example["spec"]["gateway"]["routes"]
    assert [r["intents"] for r in routes if r["priorityClass"] == "urgent"] == [list(URGENT_INTENTS)]


def test_load_spec_reads_whole_objects_and_bare_specs(tmp_path: Path) -> None:
    whole = tmp_path / "whole.yaml"
    whole.write_text((ROOT / "examples" / "production.yaml").read_text().split("---\n", 1)[1])
    assert load_spec(whole).model.name == "llama-chat"
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(local_spec().model_dump(mode="json", by_alias=True, exclude_none=True)))
    assert load_spec(bare).model.name == "emulated_chat"
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: {name: x}\n")
    with pytest.raises(SpecFileError, match="not a valid"):
        load_spec(broken)
