"""Many people chatting at once on one database (SQLite and PostgreSQL).

8 threads × 200 real chat turns through `core.chat.stream_turn` against the OpenAI-compatible
test server, all writing to the same database while a reader keeps listing and opening chats
(the Sandbox's history sidebar); every reply is checkpointed at each chunk (the most writes a
turn can make), and one turn in ten is stopped after its first words, as a person pressing
Stop does. Every (thread, n) prompt and its reply must be saved exactly once, in the
right conversation and turn, with no error on any reply: a "database is locked" (or any other
database error) must never reach a person.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlmodel import col, select

from core import chat, history
from core.catalog import CardView
from core.chat import TurnRequest, TurnResult, stream_turn
from core.inference.types import TextDelta
from core.tables import Conversation, UsageEvent
from core.workspace import Workspace
from tests.integration.core_helpers import add_openai_card, message_rows
from tests.servers.openai_server import OpenAITestServer

MakeWorkspace = Callable[..., Workspace]

THREADS = 8
TURNS = 200  # per thread
TURNS_PER_CHAT = 10  # a thread starts a new conversation every 10 turns, as people do
STOPPED_AT = 5  # the 6th turn of each chat is stopped after its first delta
PROMPT = re.compile(r"^thread (\d+) turn (\d+)$")
REPLY = re.compile(r"^Echo: thread (\d+) turn (\d+)$")


@dataclass
class Outcome:
    thread: int
    n: int
    result: TurnResult | None  # None: stopped (the generator was closed)
    streamed: str


def chat_thread(
    ws: Workspace,
    card: CardView,
    thread: int,
    start: threading.Barrier,
    outcomes: list[Outcome],
    failures: list[str],
) -> None:
    start.wait()
    conversation_id: int | None = None
    for n in range(TURNS):
        if n % TURNS_PER_CHAT == 0:
            conversation_id = None
        try:
            streamed: list[str] = []
            result: TurnResult | None = None
            request = TurnRequest(
                model_id=card.id,
                prompt=f"thread {thread} turn {n}",
                conversation_id=conversation_id,
            )
            turn = stream_turn(ws, request)
            for event in turn:
                if isinstance(event, TextDelta):
                    streamed.append(event.text)
                    if n % TURNS_PER_CHAT == STOPPED_AT:
                        turn.close()  # Stop: the reply so far is saved, status "stopped"
                        break
                else:
                    result = event
        except BaseException as exc:  # noqa: BLE001 — what a person would have seen
            failures.append(f"thread {thread} turn {n}: {type(exc).__name__}: {exc}")
            continue
        if result is not None:
            conversation_id = result.conversation_id
        outcomes.append(Outcome(thread, n, result, "".join(streamed)))


def sidebar_reader(ws: Workspace, stop: threading.Event, failures: list[str]) -> int:
    """Lists the chats and opens the newest, over and over, like open Sandbox tabs."""
    reads = 0
    while not stop.is_set():
        try:
            for conversation in history.list_conversations(ws, limit=5):
                history.get_conversation(ws, conversation.id)
            reads += 1
        except BaseException as exc:  # noqa: BLE001
            failures.append(f"reader: {type(exc).__name__}: {exc}")
        time.sleep(0.01)
    return reads


def test_eight_threads_chatting_lose_and_duplicate_nothing(
    make_workspace: MakeWorkspace,
    database_url: str,
    openai_server: OpenAITestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every reply is checkpointed at each chunk, as long replies are: the most writes per turn.
    monkeypatch.setattr(chat, "CHECKPOINT_SECONDS", 0.0)
    ws = make_workspace(database_url, PLUGBOARD_MAX_RETRIES="0")
    card = add_openai_card(ws, openai_server)
    outcomes: list[Outcome] = []
    failures: list[str] = []
    start = threading.Barrier(THREADS)
    stop = threading.Event()
    threads = [
        threading.Thread(target=chat_thread, args=(ws, card, t, start, outcomes, failures))
        for t in range(THREADS)
    ]
    reader = threading.Thread(target=sidebar_reader, args=(ws, stop, failures))
    began = time.monotonic()
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    stop.set()
    reader.join(timeout=30)
    elapsed = time.monotonic() - began
    print(f"\n{THREADS * TURNS} turns on {ws.engine.dialect.name} in {elapsed:.1f} s")

    # Nothing reached a person: no exception out of stream_turn, no error on any reply.
    assert not any(t.is_alive() for t in threads), "a chat thread hung"
    assert failures == []
    assert len(outcomes) == THREADS * TURNS
    stopped = {(o.thread, o.n) for o in outcomes if o.result is None}
    assert stopped == {(t, n) for t in range(THREADS) for n in range(STOPPED_AT, TURNS, 10)}
    bad = [(o.thread, o.n, o.result) for o in outcomes if o.result and o.result.status != "ok"]
    assert bad == []
    for o in outcomes:
        if o.result is None:
            assert o.streamed == "Echo:"
        else:
            assert o.streamed == o.result.text == f"Echo: thread {o.thread} turn {o.n}"

    # Every request reached the server exactly once (no retry, no double send).
    chats = [r for r in openai_server.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == THREADS * TURNS

    # The database holds every prompt and every reply exactly once…
    rows = message_rows(ws)
    expected = {(t, n) for t in range(THREADS) for n in range(TURNS)}
    users = [m for m in rows if m.role == "user"]
    replies = [m for m in rows if m.role == "assistant"]
    assert len(rows) == 2 * THREADS * TURNS
    user_keys = Counter(_key(PROMPT, m.content) for m in users)
    assert set(user_keys) == expected and set(user_keys.values()) == {1}
    by_key = {_key(PROMPT, m.content): m for m in users}
    by_prompt = {m.id: m for m in users}
    reply_keys: Counter[tuple[int, int]] = Counter()
    for m in replies:
        assert (m.error_kind, m.error_message, m.error_detail) == (None, None, None)
        if m.status == "stopped":
            assert (m.content, m.finish_reason) == ("Echo:", "stopped")
            # A stopped reply says nothing of its prompt: it is the one saved just before it
            # in the same conversation and turn.
            prompt = max(
                (u for u in users if u.conversation_id == m.conversation_id and u.id < m.id),
                key=lambda u: u.id or 0,
            )
            key = _key(PROMPT, prompt.content)
            assert key in stopped
        else:
            assert (m.status, m.finish_reason) == ("ok", "stop")
            key = _key(REPLY, m.content)
            prompt = by_key[key]
        assert m.completion_tokens is not None
        reply_keys[key] += 1
        # …in the conversation and turn it belongs to, right after its own prompt.
        assert (m.conversation_id, m.turn) == (prompt.conversation_id, prompt.turn)
        assert m.id is not None and prompt.id is not None and m.id > prompt.id
    assert set(reply_keys) == expected and set(reply_keys.values()) == {1}
    results = {(o.thread, o.n): o.result for o in outcomes}
    for key, prompt in by_key.items():
        assert prompt.turn == key[1] % TURNS_PER_CHAT
        result = results[key]
        if result is not None:
            assert by_prompt[result.prompt_message_id] is prompt
            assert result.conversation_id == prompt.conversation_id
    conversations: dict[int, set[int]] = {}
    for key, prompt in by_key.items():
        conversations.setdefault(prompt.conversation_id, set()).add(key[0])
    assert len(conversations) == THREADS * TURNS // TURNS_PER_CHAT
    assert all(len(owners) == 1 for owners in conversations.values())  # no chat got mixed up

    with ws.session() as session:
        assert len(session.exec(select(Conversation)).all()) == len(conversations)
        events = session.exec(select(UsageEvent).order_by(col(UsageEvent.id))).all()
    assert len(events) == THREADS * TURNS
    assert Counter(e.status for e in events) == {
        "ok": THREADS * TURNS - len(stopped),
        "stopped": len(stopped),
    }

    # The history each turn sent was its own conversation's, complete.
    for request in chats[:: THREADS * 3]:
        sent = request.json()["messages"]
        key = _key(PROMPT, sent[-1]["content"])
        turn = key[1] % TURNS_PER_CHAT
        assert len(sent) == 2 * turn + 1
        assert [_key(PROMPT, m["content"])[0] for m in sent if m["role"] == "user"] == [key[0]] * (
            turn + 1
        )

    log = ws.settings.log_path.read_text()
    assert "turn failed" not in log and "locked" not in log.lower()
    assert "could not checkpoint" not in log  # checkpoints are best effort: none failed
    if ws.engine.dialect.name == "sqlite":
        with ws.engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def _key(pattern: re.Pattern[str], content: str) -> tuple[int, int]:
    match = pattern.match(content)
    assert match, content
    return int(match[1]), int(match[2])
