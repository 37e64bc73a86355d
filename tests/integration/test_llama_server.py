"""The OpenAI-compatible adapter against llama.cpp's own server (`python -m llama_cpp.server`)
serving the bundled Gemma 3 270M: a real third-party implementation of the protocol.

The model is a small base model and llama.cpp's fallback chat format often makes it end its
turn at once; "Complete the sentence: …" reliably gets words out of it at temperature 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlmodel import select

from core import catalog
from core.catalog import ModelDraft, ProviderDraft
from core.chat import TurnRequest, TurnResult, collect, stream_turn
from core.inference.http import make_client
from core.inference.openai_compat import OpenAICompatAdapter
from core.inference.target import Target
from core.inference.types import Finish, GenerationParams, Message, TextDelta, Usage
from core.tables import UsageEvent
from core.workspace import Workspace

ALIAS = "gemma-3-270m"
PROMPT = "Complete the sentence: The sky is"
PARAMS = GenerationParams(max_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    c = make_client()
    yield c
    c.close()


@pytest.fixture
def adapter(llama_server: str, client: httpx.Client) -> OpenAICompatAdapter:
    target = Target(kind="openai_compat", base_url=llama_server, model=ALIAS, name="Gemma")
    return OpenAICompatAdapter(target, client)


def raw_chunks(base_url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """What the server really streams for `body`: the JSON of every `data:` line."""
    chunks = []
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                data = line.removeprefix("data:").strip()
                if data != "[DONE]":
                    chunks.append(json.loads(data))
    return chunks


@pytest.fixture(scope="module")
def wire(llama_server: str) -> list[dict[str, Any]]:
    """The server's own stream for the request the adapter sends (usage asked for)."""
    return raw_chunks(
        llama_server,
        {
            "model": ALIAS,
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 12,
            "temperature": 0,
        },
    )


def wire_usage(wire: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((c["usage"] for c in wire if c.get("usage")), None)


def test_streamed_reply_has_real_text(
    adapter: OpenAICompatAdapter, wire: list[dict[str, Any]]
) -> None:
    events = list(adapter.stream_chat([Message("user", PROMPT)], PARAMS))
    reply = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert reply.strip(), f"llama.cpp streamed no text: {events}"
    assert any(c.isalpha() for c in reply)
    finishes = [e for e in events if isinstance(e, Finish)]
    assert len(finishes) == 1 and finishes[0].reason in ("stop", "length")
    # The same text the server streams to a plain client, delta for delta.
    on_wire = "".join(
        (c["choices"][0].get("delta") or {}).get("content") or "" for c in wire if c["choices"]
    )
    assert reply == on_wire
    usage = [e for e in events if isinstance(e, Usage)]
    server_usage = wire_usage(wire)
    if server_usage is None:
        assert usage == []
    else:
        assert usage == [Usage(server_usage["prompt_tokens"], server_usage["completion_tokens"])]


def test_non_streamed_reply(adapter: OpenAICompatAdapter) -> None:
    reply = adapter.chat([Message("user", PROMPT)], PARAMS)
    assert reply.text.strip()
    assert reply.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens and reply.usage.prompt_tokens > 5
    assert reply.usage.completion_tokens and 0 < reply.usage.completion_tokens <= 12


def test_max_tokens_reaches_the_server(adapter: OpenAICompatAdapter) -> None:
    reply = adapter.chat([Message("user", PROMPT)], GenerationParams(max_tokens=1, temperature=0))
    assert reply.finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 1


def test_list_remote_models_has_the_alias(adapter: OpenAICompatAdapter) -> None:
    assert ALIAS in adapter.list_remote_models()


def test_connection_ok(adapter: OpenAICompatAdapter) -> None:
    report = adapter.test_connection()
    assert report.ok, report.summary
    assert [s.layer for s in report.steps] == ["DNS", "Connection", "Model list", "Chat request"]
    assert ALIAS in report.remote_models
    assert report.summary.startswith(f"'{ALIAS}' answered (")


def test_base_url_without_v1(llama_server: str, client: httpx.Client) -> None:
    root = llama_server.removesuffix("/v1")
    target = Target(kind="openai_compat", base_url=root, model=ALIAS)
    assert ALIAS in OpenAICompatAdapter(target, client).list_remote_models()


def test_stream_turn_counts_tokens_and_marks_them_estimated_without_usage(
    make_workspace: Callable[..., Workspace], llama_server: str, wire: list[dict[str, Any]]
) -> None:
    ws = make_workspace()
    card = catalog.add_custom_model(
        ws,
        ProviderDraft(
            name="llama.cpp server", kind="openai_compat", base_url=llama_server, auth_type="none"
        ),
        ModelDraft(display_name="Gemma on llama.cpp", remote_model=ALIAS, context_length=2048),
    )
    events = list(
        stream_turn(
            ws,
            TurnRequest(
                model_id=card.id, prompt=PROMPT, params={"max_tokens": 12, "temperature": 0}
            ),
        )
    )
    result = collect(iter(events))
    assert isinstance(events[-1], TurnResult)
    assert result.status == "ok", result.error
    assert result.text.strip()
    assert result.text == "".join(e.text for e in events if isinstance(e, TextDelta))
    reply = result.reply
    assert reply is not None
    assert reply.content == result.text
    assert reply.finish_reason in ("stop", "length")

    server_usage = wire_usage(wire)
    assert reply.prompt_tokens and reply.prompt_tokens > 0
    assert reply.completion_tokens and reply.completion_tokens > 0
    if server_usage is None:  # llama.cpp ignores stream_options.include_usage
        assert reply.tokens_estimated is True
    else:
        assert reply.tokens_estimated is False
        assert reply.prompt_tokens == server_usage["prompt_tokens"]
        assert reply.completion_tokens == server_usage["completion_tokens"]

    with ws.session() as session:
        [event] = session.exec(select(UsageEvent).where(UsageEvent.model_id == card.id)).all()
    assert event.status == "ok"
    assert event.tokens_estimated is reply.tokens_estimated
    assert event.completion_tokens == reply.completion_tokens
    assert event.prompt_tokens == reply.prompt_tokens
