"""core.chat.stream_turn against the OpenAI-compatible test server (and once the local model)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlmodel import Session, col, select

from core import catalog, compare, db, history
from core.catalog import CardView
from core.chat import TurnRequest, TurnResult, collect, stream_turn
from core.inference.local_gguf import BUNDLED_LABEL
from core.inference.types import TextDelta
from core.tables import Message as MessageRow
from core.workspace import Workspace
from tests.conftest import free_port
from tests.integration.core_helpers import add_openai_card, message_rows, usage_events
from tests.servers.openai_server import OpenAITestServer

MakeWorkspace = Callable[..., Workspace]


@pytest.fixture
def ws(make_workspace: MakeWorkspace) -> Workspace:
    return make_workspace(PLUGBOARD_MAX_RETRIES="0")


@pytest.fixture
def card(ws: Workspace, openai_server: OpenAITestServer) -> CardView:
    return add_openai_card(ws, openai_server)


def run(ws: Workspace, card_id: int, prompt: str, **kw: Any) -> TurnResult:
    return collect(stream_turn(ws, TurnRequest(model_id=card_id, prompt=prompt, **kw)))


def server_usage(messages: list[dict[str, Any]], reply_words: int) -> tuple[int, int]:
    """What the test server reports as usage (see OpenAITestServer._usage)."""
    return sum(len(m["content"].split()) + 4 for m in messages), reply_words


def sent_messages(server: OpenAITestServer, index: int = -1) -> list[dict[str, str]]:
    chats = [r for r in server.requests if r.path.endswith("/chat/completions")]
    return [{"role": m["role"], "content": m["content"]} for m in chats[index].json()["messages"]]


# --- the prompt is saved first ----------------------------------------------------------------


def test_the_prompt_is_saved_before_the_reply_arrives(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    openai_server.chunk_delay = 0.05
    turn = stream_turn(ws, TurnRequest(model_id=card.id, prompt="Hello there, model"))
    first = next(turn)
    assert first == TextDelta("Echo:")
    # The stream is in flight: look from a separate engine, as another page would.
    other = db.make_engine(ws.settings.database_url)
    try:
        with Session(other) as session:
            rows = session.exec(select(MessageRow).order_by(col(MessageRow.id))).all()
            assert [(m.role, m.content, m.model_name) for m in rows] == [
                ("user", "Hello there, model", card.display_name)
            ]
    finally:
        other.dispose()
    assert len(openai_server.requests) == 1
    rest = list(turn)
    assert isinstance(rest[-1], TurnResult) and rest[-1].status == "ok"
    assert [m.role for m in message_rows(ws)] == ["user", "assistant"]


def test_the_prompt_is_saved_even_when_nothing_answers(make_workspace: MakeWorkspace) -> None:
    ws = make_workspace(PLUGBOARD_MAX_RETRIES="0")
    dead = add_openai_card(ws, f"http://127.0.0.1:{free_port()}/v1")
    result = run(ws, dead.id, "Is anyone there?")
    assert result.status == "error" and result.error is not None
    assert result.error.kind == "connection"
    assert "connection refused" in result.error.message
    rows = message_rows(ws, result.conversation_id)
    assert [(m.role, m.content, m.status) for m in rows] == [
        ("user", "Is anyone there?", "ok"),
        ("assistant", "", "error"),
    ]
    assert rows[1].error_kind == "connection"
    assert result.prompt_message_id == rows[0].id


# --- a good reply -----------------------------------------------------------------------------


def test_reply_and_metrics_are_saved(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    deltas: list[str] = []
    result: TurnResult | None = None
    for event in stream_turn(ws, TurnRequest(model_id=card.id, prompt="one two three")):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            result = event
    assert deltas == ["Echo:", " one", " two", " three"]
    assert result is not None and result.status == "ok" and result.error is None
    assert result.text == "Echo: one two three" and result.finish_reason == "stop"

    prompt_tokens, completion_tokens = server_usage(sent_messages(openai_server), 4)
    [user, reply] = message_rows(ws, result.conversation_id)
    assert (user.role, user.content, user.model_id) == ("user", "one two three", card.id)
    assert reply.role == "assistant" and reply.content == "Echo: one two three"
    assert reply.status == "ok" and reply.finish_reason == "stop"
    assert reply.model_id == card.id and reply.model_name == card.display_name
    assert reply.prompt_tokens == prompt_tokens == 7
    assert reply.completion_tokens == completion_tokens == 4
    assert reply.tokens_estimated is False
    assert reply.ttft_ms is not None and reply.latency_ms is not None
    assert 0 < reply.ttft_ms <= reply.latency_ms
    assert reply.error_kind is None and reply.error_message is None
    assert result.reply is not None and result.reply.id == reply.id

    [event] = usage_events(ws)
    assert event.status == "ok" and event.error_kind is None
    assert (event.model_id, event.model_name) == (card.id, card.display_name)
    assert (event.provider_id, event.provider_name) == (card.provider.id, card.provider.name)
    assert event.kind == "openai_compat"
    assert (event.prompt_tokens, event.completion_tokens) == (7, 4)
    assert event.tokens_estimated is False
    assert event.ttft_ms == reply.ttft_ms and event.latency_ms == reply.latency_ms


def test_parameters_reach_the_server_and_length_is_the_finish_reason(
    ws: Workspace, openai_server: OpenAITestServer
) -> None:
    card = add_openai_card(
        ws, openai_server, default_params={"temperature": 0.3, "top_p": 0.9, "max_tokens": 50}
    )
    result = run(
        ws,
        card.id,
        "a b c d e f",
        system_prompt="Be brief.",
        params={"max_tokens": 3, "seed": 7, "stop": "END", "temperature": None},
    )
    body = openai_server.requests[-1].json()
    assert body["max_tokens"] == 3 and body["seed"] == 7 and body["stop"] == ["END"]
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9  # the card's defaults
    assert body["stream"] is True
    assert sent_messages(openai_server) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a b c d e f"},
    ]
    assert result.text == "Echo: a b" and result.finish_reason == "length"
    assert result.reply is not None and result.reply.params["max_tokens"] == 3
    assert result.reply.completion_tokens == 3


def test_tokens_are_estimated_when_the_server_sends_no_usage(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    openai_server.no_usage = True
    result = run(ws, card.id, "count these words please")
    reply = result.reply
    assert reply is not None and reply.status == "ok"
    assert reply.tokens_estimated is True
    assert reply.completion_tokens is not None and reply.completion_tokens >= 5  # 5 chunks
    assert reply.prompt_tokens == math.ceil(len("count these words please") / 4) + 4
    [event] = usage_events(ws)
    assert event.tokens_estimated is True
    assert (event.prompt_tokens, event.completion_tokens) == (
        reply.prompt_tokens,
        reply.completion_tokens,
    )


def test_one_usage_event_per_request(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    first = run(ws, card.id, "first")
    openai_server.fault("status", status=500)
    second = run(ws, card.id, "second", conversation_id=first.conversation_id)
    third = run(ws, card.id, "third", conversation_id=first.conversation_id)
    assert [r.status for r in (first, second, third)] == ["ok", "error", "ok"]
    events = usage_events(ws)
    assert [(e.status, e.error_kind) for e in events] == [
        ("ok", None),
        ("error", "server"),
        ("ok", None),
    ]
    assert len(openai_server.requests) == 3


# --- failures ---------------------------------------------------------------------------------


def test_an_error_mid_stream_keeps_the_partial_text(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    openai_server.fault("error_event", after=2, message="CUDA out of memory")
    result = run(ws, card.id, "alpha beta gamma delta")
    assert result.status == "error" and result.error is not None
    assert result.text == "Echo: alpha"  # what arrived before the error
    [_, reply] = message_rows(ws, result.conversation_id)
    assert reply.status == "error" and reply.content == "Echo: alpha"
    assert reply.error_kind == "server"
    assert reply.error_message == "The model stopped with an error mid-reply: CUDA out of memory"
    assert reply.completion_tokens is not None and reply.completion_tokens >= 2  # 2 chunks
    assert reply.tokens_estimated
    [event] = usage_events(ws)
    assert (event.status, event.error_kind) == ("error", "server")


def test_a_dropped_connection_mid_stream_keeps_the_partial_text(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    openai_server.fault("cut", after=3)
    result = run(ws, card.id, "alpha beta gamma delta")
    assert result.status == "error" and result.error is not None
    assert result.error.kind == "interrupted"
    assert result.text == "Echo: alpha beta"
    [_, reply] = message_rows(ws, result.conversation_id)
    assert reply.content == "Echo: alpha beta" and reply.error_kind == "interrupted"


@pytest.mark.parametrize(
    ("setup", "kind", "words"),
    [
        (lambda s: setattr(s, "api_key", "the-right-key-000000"), "auth", "rejected the API key"),
        (lambda s: s.fault("status", status=500), "server", "internal error (500)"),
        (lambda s: s.fault("html"), "server", "an HTML page: 502 Bad Gateway"),
        (lambda s: setattr(s, "models", ("other",)), "not_found", "(404)"),
    ],
)
def test_a_failing_request_saves_an_error_reply_without_traceback(
    ws: Workspace,
    card: CardView,
    openai_server: OpenAITestServer,
    setup: Callable[[OpenAITestServer], None],
    kind: str,
    words: str,
) -> None:
    setup(openai_server)
    result = run(ws, card.id, "hello?")
    assert result.status == "error" and result.error is not None
    assert result.error.kind == kind and words in result.error.message
    assert result.text == "" and result.finish_reason is None
    [user, reply] = message_rows(ws, result.conversation_id)
    assert user.content == "hello?"
    assert reply.status == "error" and reply.content == ""
    assert reply.error_kind == kind and reply.error_message == result.error.message
    for text in (reply.error_message or "", reply.error_detail or ""):
        assert "Traceback" not in text and 'File "' not in text
    assert reply.error_detail and f"HTTP {result.error.status}" in reply.error_detail
    [event] = usage_events(ws)
    assert (event.status, event.error_kind, event.completion_tokens) == ("error", kind, None)


def test_out_of_range_parameters_are_refused_before_any_request(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    result = run(ws, card.id, "too hot", params={"temperature": 3, "top_p": 1.5})
    assert result.status == "error" and result.error is not None
    assert result.error.kind == "bad_request"
    assert result.error.message == (
        "Check the settings: Temperature must be ≥ 0 and ≤ 2 (got 3). "
        "Top P must be ≥ 0 and ≤ 1 (got 1.5)."
    )
    assert openai_server.requests == []  # nothing was sent
    assert usage_events(ws) == []  # and nothing counted
    [user, reply] = message_rows(ws, result.conversation_id)
    assert user.content == "too hot"  # the prompt is not lost
    assert reply.status == "error" and reply.error_kind == "bad_request"


def test_max_tokens_beyond_the_context_is_refused(
    ws: Workspace, openai_server: OpenAITestServer
) -> None:
    card = add_openai_card(ws, openai_server, context_length=512)
    result = run(ws, card.id, "long please", params={"max_tokens": 1000})
    assert result.error is not None and "context length (512)" in result.error.message
    assert openai_server.requests == []


# --- Stop -------------------------------------------------------------------------------------


def test_stop_saves_the_partial_reply(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    openai_server.reply = "one two three four five six seven eight nine ten"
    openai_server.chunk_delay = 0.02
    turn: Iterator[TextDelta | TurnResult] = stream_turn(
        ws, TurnRequest(model_id=card.id, prompt="count to ten")
    )
    received = [next(turn), next(turn)]
    assert received == [TextDelta("one"), TextDelta(" two")]
    turn.close()  # what the Stop button does

    [user, reply] = message_rows(ws)
    assert user.content == "count to ten"
    assert reply.status == "stopped" and reply.content == "one two"
    assert reply.finish_reason == "stopped" and reply.error_kind is None
    assert reply.completion_tokens == 2 and reply.tokens_estimated
    [event] = usage_events(ws)
    assert event.status == "stopped"
    # A stopped reply with text is part of the history of the next turn.
    run(ws, card.id, "go on", conversation_id=reply.conversation_id)
    assert sent_messages(openai_server)[-2] == {"role": "assistant", "content": "one two"}


# --- history ----------------------------------------------------------------------------------


def test_history_is_sent_on_the_next_turn(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    first = run(ws, card.id, "What is 2+2?", system_prompt="Answer in one word.")
    second = run(
        ws,
        card.id,
        "And 3+3?",
        conversation_id=first.conversation_id,
        system_prompt="Answer in one word.",
    )
    assert second.conversation_id == first.conversation_id
    assert sent_messages(openai_server) == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "Echo: What is 2+2?"},
        {"role": "user", "content": "And 3+3?"},
    ]
    conversation = history.get_conversation(ws, first.conversation_id)
    assert conversation is not None and conversation.system_prompt == "Answer in one word."
    assert [m.role for m in conversation.messages] == ["user", "assistant"] * 2


def test_a_failed_turn_is_not_sent_again(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    first = run(ws, card.id, "good one")
    openai_server.fault("status", status=503)
    run(ws, card.id, "this one fails", conversation_id=first.conversation_id)
    run(ws, card.id, "third", conversation_id=first.conversation_id)
    assert sent_messages(openai_server) == [
        {"role": "user", "content": "good one"},
        {"role": "assistant", "content": "Echo: good one"},
        {"role": "user", "content": "third"},
    ]


def test_lanes_have_their_own_history(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    other = add_openai_card(ws, openai_server, display_name="Second lane")
    conversation = history.create_conversation(ws, title="compare", mode="compare")
    for lane, model in enumerate((card, other)):
        run(ws, model.id, f"lane {lane} question", conversation_id=conversation.id, lane=lane)
    run(ws, other.id, "follow-up", conversation_id=conversation.id, lane=1)
    assert sent_messages(openai_server) == [
        {"role": "user", "content": "lane 1 question"},
        {"role": "assistant", "content": "Echo: lane 1 question"},
        {"role": "user", "content": "follow-up"},
    ]
    lanes = [(m.lane, m.role) for m in message_rows(ws, conversation.id)]
    assert lanes == [(0, "user"), (0, "assistant")] + [(1, "user"), (1, "assistant")] * 2


def test_compare_lanes_stream_in_parallel(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    """A compare run: one conversation, one thread per lane, all saving as they go."""
    openai_server.chunk_delay = 0.01
    cards = [card] + [
        add_openai_card(ws, openai_server, display_name=f"Lane {n}") for n in (1, 2, 3)
    ]
    conversation = history.create_conversation(ws, title="compare", mode="compare")
    results: dict[int, TurnResult] = {}
    failures: list[BaseException] = []

    def lane(n: int) -> None:
        try:
            results[n] = run(
                ws, cards[n].id, f"question for lane {n}", conversation_id=conversation.id, lane=n
            )
        except BaseException as exc:  # noqa: BLE001 — collected for the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=lane, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert {n: r.status for n, r in results.items()} == dict.fromkeys(range(4), "ok")
    for n, result in results.items():
        assert result.text == f"Echo: question for lane {n}"
        assert result.conversation_id == conversation.id
    rows = message_rows(ws, conversation.id)
    by_lane = {n: [(m.role, m.model_name) for m in rows if m.lane == n] for n in range(4)}
    for n in range(4):
        name = cards[n].display_name
        assert by_lane[n] == [("user", name), ("assistant", name)]
    assert sorted(e.model_name for e in usage_events(ws)) == sorted(c.display_name for c in cards)


def test_trimming_to_the_context_drops_the_oldest_turns(
    ws: Workspace, openai_server: OpenAITestServer
) -> None:
    # About 4 characters a token: each 40-character prompt costs 10 + 4, each reply
    # ("Echo: " + prompt) 12 + 4. With 100 tokens of context and 10 kept for the reply,
    # three past turns (90) no longer fit next to a new prompt (14): the oldest turn goes.
    card = add_openai_card(ws, openai_server, context_length=100, default_params={"max_tokens": 10})
    prompts = [f"{n}" * 40 for n in range(1, 5)]
    conversation_id = None
    results = []
    for prompt in prompts:
        result = run(ws, card.id, prompt, conversation_id=conversation_id)
        conversation_id = result.conversation_id
        results.append(result)
    assert [r.dropped for r in results] == [0, 0, 0, 2]
    assert [r.status for r in results] == ["ok"] * 4
    assert sent_messages(openai_server) == [
        {"role": "user", "content": prompts[1]},
        {"role": "assistant", "content": f"Echo: {prompts[1]}"},
        {"role": "user", "content": prompts[2]},
        {"role": "assistant", "content": f"Echo: {prompts[2]}"},
        {"role": "user", "content": prompts[3]},
    ]
    # Nothing is deleted: trimming only changes what is sent.
    assert len(message_rows(ws, conversation_id)) == 8


def test_no_context_length_sends_everything(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    conversation_id = None
    for n in range(4):
        result = run(ws, card.id, "x" * 400 + str(n), conversation_id=conversation_id)
        conversation_id = result.conversation_id
        assert result.dropped == 0
    assert len(sent_messages(openai_server)) == 7


# --- conversations ----------------------------------------------------------------------------


def test_the_title_comes_from_the_first_prompt(ws: Workspace, card: CardView) -> None:
    first = run(ws, card.id, "  What is   the tallest\nmountain?  ")
    run(ws, card.id, "And the deepest lake?", conversation_id=first.conversation_id)
    conversation = history.get_conversation(ws, first.conversation_id)
    assert conversation is not None and conversation.title == "What is the tallest mountain?"

    long_prompt = "Please explain " + "very " * 30 + "carefully."
    second = run(ws, card.id, long_prompt)
    assert second.conversation_id != first.conversation_id
    titled = history.get_conversation(ws, second.conversation_id)
    assert titled is not None
    assert len(titled.title) == history.TITLE_LENGTH and titled.title.endswith("…")
    assert titled.title.startswith("Please explain very very")


def test_an_unknown_conversation_id_starts_a_new_conversation(
    ws: Workspace, card: CardView
) -> None:
    result = run(ws, card.id, "hello", conversation_id=987654)
    assert result.conversation_id != 987654 and result.status == "ok"
    assert history.get_conversation(ws, result.conversation_id) is not None


def test_a_deleted_card_cannot_be_chatted_with(ws: Workspace, card: CardView) -> None:
    catalog.delete_model(ws, card.id)
    with pytest.raises(catalog.NotFoundInCatalog):
        run(ws, card.id, "hello")


# --- the bundled local model ------------------------------------------------------------------


def test_the_bundled_local_model_answers(ws: Workspace) -> None:
    local = catalog.find_card(ws, BUNDLED_LABEL)
    assert local is not None
    result = run(
        ws, local.id, "What is the capital of Italy?", params={"max_tokens": 4, "temperature": 0}
    )
    assert result.status == "ok", result.error
    reply = result.reply
    assert reply is not None and reply.content == result.text
    assert reply.finish_reason in ("length", "stop")
    assert reply.tokens_estimated is False  # llama.cpp counts real tokens
    assert reply.prompt_tokens is not None and reply.prompt_tokens > 20  # template + example
    assert reply.completion_tokens is not None and reply.completion_tokens <= 4
    [event] = usage_events(ws)
    assert event.kind == "local_gguf" and event.status == "ok"


def test_a_compare_run_keeps_its_lanes_through_its_turns(
    ws: Workspace, card: CardView, openai_server: OpenAITestServer
) -> None:
    """Each lane's turn has its own settings; they must not replace the run's saved lanes
    (reopening a run restores its lanes from them)."""
    other = add_openai_card(ws, openai_server, display_name="Other")
    lanes = [
        compare.LaneSpec(card.id, "Be brief.", {"temperature": 0.1}),
        compare.LaneSpec(other.id, "Be long.", {"temperature": 1.5}),
    ]
    run_id = compare.start_compare(ws, lanes, title="kept", sync=False)
    for _ in range(2):
        done = [
            e for _, e in compare.stream_lanes(ws, run_id, "hi", lanes) if isinstance(e, TurnResult)
        ]
        assert [r.status for r in done] == ["ok", "ok"]
    saved = history.get_conversation(ws, run_id)
    assert saved is not None and compare.lanes_of(saved) == lanes
    assert saved.params["sync"] is False
    assert [s["temperature"] for s in (r.json() for r in openai_server.requests[-2:])] in (
        [0.1, 1.5],
        [1.5, 0.1],
    )
