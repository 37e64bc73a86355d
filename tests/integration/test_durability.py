"""A process killed with SIGKILL in the middle of a streamed reply.

A child process (`python -c CHILD`, the same Workspace and `core.chat.stream_turn` the app
runs) streams a long reply from a slow test server and is killed -9 halfway. Then:

* what was saved is intact: the conversation, the prompt, and the reply as far as its last
  checkpoint (`core.chat.CHECKPOINT_SECONDS`, 1 s) — a crash loses at most the newest second
  of text, the reply's figures (usage, final token counts) and its UsageEvent;
* the next start opens the database cleanly: SQLite recovers its WAL, `PRAGMA
  integrity_check` says ok, foreign keys hold, the migrations run (nothing to do);
* readers show the leftover "streaming" row as an interrupted reply (the Sandbox draws it as
  an error with Retry), history leaves it out, and the conversation goes on.

The same with the real thing — `streamlit run app.py` driven by chromium, killed -9 while the
browser shows the reply streaming, then started again — is tests/e2e/test_durability_flow.py
(it shares pytest-playwright's browser: a second Playwright in one process cannot start).
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core import catalog, chat, db, history
from core.chat import TurnRequest, TurnResult, collect, stream_turn
from core.inference.types import TextDelta
from core.tables import Message as MessageRow
from core.tables import UsageEvent
from core.workspace import Workspace
from tests.conftest import ROOT, make_settings
from tests.integration.core_helpers import add_openai_card, message_rows
from tests.servers.openai_server import OpenAITestServer

MakeWorkspace = Callable[..., Workspace]
CARD = "Slow echo"
CHUNK_DELAY = 0.05  # 20 words a second
WORDS = [f"w{i}" for i in range(400)]  # 20 s of reply: it never ends before the kill
LONG_REPLY = " ".join(WORDS)

# The app's own code path, in a process of its own; one JSON line per event.
CHILD = """
import json, sys
from core import catalog, chat
from core.chat import TurnRequest, stream_turn
from core.inference.types import TextDelta
from core.workspace import Workspace

if len(sys.argv) > 2:
    chat.CHECKPOINT_SECONDS = float(sys.argv[2])
ws = Workspace.open()
card = catalog.find_card(ws, "Slow echo")
conversation = int(sys.argv[3]) if len(sys.argv) > 3 else None
request = TurnRequest(model_id=card.id, prompt=sys.argv[1], conversation_id=conversation)
for event in stream_turn(ws, request):
    if isinstance(event, TextDelta):
        print(json.dumps({"delta": event.text}), flush=True)
    else:
        print(json.dumps({"done": event.status}), flush=True)
"""


@pytest.fixture(scope="module")
def slow_server() -> Iterator[OpenAITestServer]:
    server = OpenAITestServer(chunk_delay=CHUNK_DELAY).start()
    yield server
    server.stop()


@pytest.fixture
def slow(slow_server: OpenAITestServer) -> OpenAITestServer:
    slow_server.reset()
    slow_server.reply = LONG_REPLY
    return slow_server


class Child:
    """The child process, with its stdout read line by line on a thread."""

    def __init__(self, home: Path, database_url: str, *args: str) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PLUGBOARD_HOME": str(home),
            "DATABASE_URL": database_url,
            "PLUGBOARD_MAX_RETRIES": "0",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def wait_for_deltas(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while sum("delta" in e for e in self.events) < count:
            try:
                event = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"only {len(self.events)} events in {timeout}s") from None
            if event is None:
                _, err = self.process.communicate()
                raise AssertionError(f"the child ended early: {self.events[-3:]} {err[-2000:]}")
            self.events.append(event)

    def kill(self) -> str:
        """SIGKILL; returns all the text the child had streamed (printed) before it died."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        assert self.process.returncode == -signal.SIGKILL
        while (event := self.lines.get(timeout=30)) is not None:
            self.events.append(event)
        assert not any("done" in e for e in self.events), "the reply ended before the kill"
        return "".join(e["delta"] for e in self.events if "delta" in e)


def sqlite_path(database_url: str) -> Path | None:
    return (
        Path(database_url.removeprefix("sqlite:///")) if database_url.startswith("sqlite") else None
    )


def assert_sqlite_intact(path: Path) -> None:
    """Opened the way any SQLite client would (recovering the WAL), before Plugboard does."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def assert_at_head(ws: Workspace) -> None:
    head = ScriptDirectory.from_config(db.alembic_config(ws.engine)).get_current_head()
    with ws.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head


def words(text: str) -> list[str]:
    return text.split()


# --- the main scenario ------------------------------------------------------------------------


def test_sigkill_mid_reply_keeps_what_was_saved_and_the_next_start_is_clean(
    make_workspace: MakeWorkspace,
    database_url: str,
    slow: OpenAITestServer,
    tmp_path: Path,
) -> None:
    # A workspace with a card and an earlier, finished conversation, as before any crash.
    setup = make_workspace(database_url, PLUGBOARD_MAX_RETRIES="0")
    card = add_openai_card(setup, slow, display_name=CARD)
    slow.reply = "an earlier answer"
    earlier = collect(stream_turn(setup, TurnRequest(model_id=card.id, prompt="earlier chat")))
    assert earlier.status == "ok"
    slow.reply = LONG_REPLY
    before = {m.id: (m.role, m.content, m.status) for m in message_rows(setup)}
    setup.close()

    home = setup.settings.home
    child = Child(home, database_url, "Tell me a very long story")
    child.wait_for_deltas(70)  # 3.5 s of streaming: three checkpoints have been written
    streamed = child.kill()
    slow.reply = None  # from now on the server echoes quickly
    slow.chunk_delay = 0.0
    assert words(streamed) == WORDS[: len(words(streamed))] and len(words(streamed)) >= 70

    path = sqlite_path(database_url)
    if path is not None:
        assert Path(f"{path}-wal").exists()  # the kill left a write-ahead log to recover
        assert_sqlite_intact(path)

    # The next start: migrations (nothing to do), seeding (already done), then the data.
    ws = Workspace.open(make_settings(home, database_url))
    try:
        assert_at_head(ws)
        rows = message_rows(ws)
        assert {m.id: (m.role, m.content, m.status) for m in rows if m.id in before} == before
        new = [m for m in rows if m.id not in before]
        assert [(m.role, m.status) for m in new] == [("user", "ok"), ("assistant", "streaming")]
        prompt, partial = new
        assert prompt.content == "Tell me a very long story"
        assert partial.conversation_id == prompt.conversation_id and partial.turn == prompt.turn

        # The reply as far as its last checkpoint: a prefix of what had streamed, at most about
        # a second (20 words) behind it.
        saved = words(partial.content)
        assert saved == words(streamed)[: len(saved)]
        lost = len(words(streamed)) - len(saved)
        assert 0 <= lost <= 1.5 / CHUNK_DELAY, (len(saved), len(words(streamed)))
        assert len(saved) >= 40
        assert partial.latency_ms is not None and partial.latency_ms >= 2000
        assert partial.completion_tokens == len(saved)  # one word a chunk
        assert partial.finish_reason is None and partial.prompt_tokens is None  # lost
        with ws.session() as session:  # the killed request left no UsageEvent (lost too)
            assert len(session.exec(select(UsageEvent)).all()) == 1

        # Readers: an interrupted reply, with the text that had been saved.
        conversation = history.get_conversation(ws, prompt.conversation_id)
        assert conversation is not None and conversation.title == "Tell me a very long story"
        view = conversation.messages[-1]
        assert (view.status, view.error_kind) == ("error", "interrupted")
        assert view.error_message == history.INTERRUPTED_MESSAGE
        assert view.content == partial.content

        # The conversation goes on; the interrupted turn is not sent again as history.
        result = collect(
            stream_turn(
                ws,
                TurnRequest(
                    model_id=card.id,
                    prompt="shorter, please",
                    conversation_id=prompt.conversation_id,
                ),
            )
        )
        assert result.status == "ok" and result.text == "Echo: shorter, please"
        assert result.reply is not None and result.reply.turn == prompt.turn + 1
        sent = slow.requests[-1].json()["messages"]
        assert sent == [{"role": "user", "content": "shorter, please"}]
    finally:
        ws.close()
    if path is not None:
        assert_sqlite_intact(path)


def test_the_sandbox_shows_a_reply_cut_by_a_crash_and_retries_it(
    make_workspace: MakeWorkspace,
    slow: OpenAITestServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real app.py (AppTest) started on the database a killed process left behind."""
    database_url = f"sqlite:///{tmp_path / 'crashed.db'}"
    setup = make_workspace(database_url)
    card = add_openai_card(setup, slow, display_name=CARD)
    setup.close()
    home = setup.settings.home
    child = Child(home, database_url, "A long story, please", "0.5")
    child.wait_for_deltas(40)
    streamed = child.kill()
    slow.reply, slow.chunk_delay = None, 0.0

    monkeypatch.setenv("PLUGBOARD_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("PLUGBOARD_MAX_RETRIES", "0")
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        conversation_id = history.list_conversations(setup, limit=1)[0].id
        at.session_state["sandbox.model"] = card.id
        at.session_state["sandbox.conversation_id"] = conversation_id
        at.switch_page("pages/sandbox.py").run()
        assert not at.exception, [e.value for e in at.exception]

        [user, assistant] = at.chat_message
        assert user.markdown[0].value == "A long story, please"
        shown = assistant.markdown[0].value
        assert shown and words(streamed)[: len(words(shown))] == words(shown)
        assert any("The reply was cut off." in e.value for e in at.error)
        assert any(history.INTERRUPTED_MESSAGE in e.value for e in at.error)

        retry = [b for b in at.button if b.label == "Retry"]
        assert retry, [b.label for b in at.button]
        retry[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error
        assert [(m.name, m.markdown[0].value) for m in at.chat_message] == [
            ("user", "A long story, please"),
            ("assistant", "Echo: A long story, please"),
        ]
        rows = message_rows(setup, conversation_id)
        assert [(m.role, m.status) for m in rows] == [("user", "ok"), ("assistant", "ok")]
    finally:
        st.cache_resource.clear()


def test_repeated_kills_during_constant_writes_never_corrupt_sqlite(
    make_workspace: MakeWorkspace, slow: OpenAITestServer, tmp_path: Path
) -> None:
    """A checkpoint on every chunk (a write every 10 ms), killed at a random moment, six times
    on the same database: each kill may land inside a transaction. Each restart finds an
    intact file, and each saved reply is a clean prefix of what had been streamed."""
    database_url = f"sqlite:///{tmp_path / 'torture.db'}"
    setup = make_workspace(database_url)
    card_id = add_openai_card(setup, slow, display_name=CARD).id
    setup.close()
    home = setup.settings.home
    slow.chunk_delay = 0.01
    rng = random.Random(20261124)
    conversation_id: int | None = None
    for round_ in range(6):
        args = [f"round {round_}", "0"]
        if conversation_id is not None:
            args.append(str(conversation_id))
        child = Child(home, database_url, *args)
        child.wait_for_deltas(rng.randint(5, 120))
        time.sleep(rng.uniform(0, 0.05))
        streamed = child.kill()

        path = sqlite_path(database_url)
        assert path is not None
        assert_sqlite_intact(path)
        ws = Workspace.open(make_settings(home, database_url))
        try:
            assert_at_head(ws)
            rows = message_rows(ws)
            conversation_id = rows[0].conversation_id
            prompts = [m for m in rows if m.role == "user"]
            assert [m.content for m in prompts] == [f"round {n}" for n in range(round_ + 1)]
            assert {m.conversation_id for m in rows} == {conversation_id}
            replies = [m for m in rows if m.role == "assistant"]
            assert all(m.status == "streaming" for m in replies)
            for reply in replies:
                assert words(reply.content) == WORDS[: len(words(reply.content))]
            mine = [m for m in replies if m.turn == round_]
            assert len(mine) <= 1  # none if killed before the first checkpoint committed
            if mine:
                saved = words(mine[0].content)
                assert saved == words(streamed)[: len(saved)]
                assert len(words(streamed)) - len(saved) <= 2  # a checkpoint a chunk
            assert catalog.get_card(ws, card_id).display_name == CARD
        finally:
            ws.close()


# --- checkpoints, in process ------------------------------------------------------------------


@pytest.fixture
def fast_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat, "CHECKPOINT_SECONDS", 0.2)


def _other_engine_rows(ws: Workspace) -> list[MessageRow]:
    """What another process sees, through its own engine."""
    other = db.make_engine(ws.settings.database_url)
    try:
        with db.session_scope(other) as session:
            return list(session.exec(select(MessageRow).order_by(MessageRow.id)).all())  # type: ignore[arg-type]
    finally:
        other.dispose()


def test_a_long_reply_is_checkpointed_while_it_streams_then_completed_in_place(
    make_workspace: MakeWorkspace, slow: OpenAITestServer, fast_checkpoints: None
) -> None:
    ws = make_workspace(PLUGBOARD_MAX_RETRIES="0")
    card = add_openai_card(ws, slow, display_name=CARD)
    slow.reply = " ".join(WORDS[:30])  # 1.5 s
    turn = stream_turn(ws, TurnRequest(model_id=card.id, prompt="stream slowly"))
    seen: list[str] = []
    for event in turn:
        assert isinstance(event, TextDelta)
        seen.append(event.text)
        if len(seen) == 15:
            break
    rows = _other_engine_rows(ws)
    assert [(m.role, m.status) for m in rows] == [("user", "ok"), ("assistant", "streaming")]
    assert 0 < len(words(rows[1].content)) <= 15
    assert words(rows[1].content) == WORDS[: len(words(rows[1].content))]
    # In this process the reply is live: it reads as streaming, not as interrupted.
    conversation = history.get_conversation(ws, rows[0].conversation_id)
    assert conversation is not None and conversation.messages[-1].status == "streaming"

    [result] = [e for e in turn if isinstance(e, TurnResult)]
    assert result.status == "ok" and result.text == " ".join(WORDS[:30])
    final = message_rows(ws)
    assert [(m.id, m.role, m.status) for m in final] == [
        (rows[0].id, "user", "ok"),
        (rows[1].id, "assistant", "ok"),  # the same row, completed
    ]
    assert final[1].content == result.text and final[1].finish_reason == "stop"
    assert final[1].prompt_tokens is not None and final[1].tokens_estimated is False
    assert result.reply is not None and result.reply.id == rows[1].id
    assert result.reply.status == "ok"


def test_stop_and_errors_after_a_checkpoint_complete_the_same_row(
    make_workspace: MakeWorkspace, slow: OpenAITestServer, fast_checkpoints: None
) -> None:
    ws = make_workspace(PLUGBOARD_MAX_RETRIES="0")
    card = add_openai_card(ws, slow, display_name=CARD)

    turn = stream_turn(ws, TurnRequest(model_id=card.id, prompt="stop me"))
    for n, _ in enumerate(turn):
        if n == 10:
            turn.close()  # Stop
            break
    slow.fault("cut", after=8)
    cut = collect(stream_turn(ws, TurnRequest(model_id=card.id, prompt="cut me")))
    assert cut.status == "error"

    replies = [m for m in message_rows(ws) if m.role == "assistant"]
    assert [(m.status, m.finish_reason, m.error_kind) for m in replies] == [
        ("stopped", "stopped", None),
        ("error", None, "interrupted"),
    ]
    assert words(replies[0].content) == WORDS[:11]
    assert words(replies[1].content) == WORDS[:8]
    with ws.session() as session:
        assert len(session.exec(select(UsageEvent)).all()) == 2


# --- the real app -----------------------------------------------------------------------------
