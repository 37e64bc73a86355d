"""Upgrading a database written by the first released Plugboard (schema 0001) to head.

tests/data/plugboard-0001.db was written by the released code itself (see tests/data/README.md).
A copy is upgraded by a normal start (`Workspace.open`); every row of every table must come
through with every value unchanged, the new columns must be filled in, the stored API keys
must still decrypt with the key they were saved under, and the old chats must go on.
On PostgreSQL the same rows are first copied into a database at 0001.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, select, text
from sqlmodel import SQLModel

from core import catalog, db, history
from core.chat import TurnRequest, collect, stream_turn
from core.inference.local_gguf import BUNDLED_LABEL
from core.secrets import SecretBox
from core.workspace import Workspace
from tests.conftest import make_settings
from tests.data.make_0001_db import GATEWAY_KEY, LONG_PROMPT, OPENAI_KEY, SECRET_KEY
from tests.servers.openai_server import OpenAITestServer

DATA = Path(__file__).resolve().parents[1] / "data" / "plugboard-0001.db"
# Parents before children, so foreign keys hold while copying.
TABLES = ("app_state", "provider", "model_card", "conversation", "message", "usage_event")
Rows = dict[str, dict[Any, dict[str, Any]]]


def normalise(value: Any) -> Any:
    """SQLite gives naive UTC datetimes, PostgreSQL aware ones: compare them as UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def read_rows(engine: Engine, columns: dict[str, list[str]] | None = None) -> Rows:
    """Every row of the 0001 tables, typed, keyed by primary key (only `columns` if given)."""
    meta = MetaData()
    meta.reflect(engine, only=TABLES)
    rows: Rows = {}
    with engine.connect() as conn:
        for name in TABLES:
            table = meta.tables[name]
            key = table.primary_key.columns.values()[0].name
            wanted = columns[name] if columns else [c.name for c in table.columns]
            rows[name] = {
                row[key]: {c: normalise(row[c]) for c in wanted}
                for row in conn.execute(select(table)).mappings()
            }
    return rows


def revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def copy_into(source: Engine, target: Engine) -> None:
    """The 0001 rows, copied as they are into a database at 0001 (PostgreSQL)."""
    db.migrate(target, "0001")
    src, dst = MetaData(), MetaData()
    src.reflect(source, only=TABLES)
    dst.reflect(target, only=TABLES)
    with source.connect() as read, target.begin() as write:
        for name in TABLES:
            rows = [dict(r) for r in read.execute(select(src.tables[name])).mappings()]
            if rows:
                write.execute(dst.tables[name].insert(), rows)
            if "id" in dst.tables[name].columns:  # explicit ids do not move the sequences
                write.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"(SELECT max(id) FROM {name}))"
                    )
                )


@pytest.fixture
def old_database(tmp_path: Path, database_url: str) -> str:
    """A database holding exactly the released 0001 data, on SQLite or PostgreSQL."""
    copy = tmp_path / "plugboard-0001.db"
    shutil.copyfile(DATA, copy)
    if database_url.startswith("sqlite"):
        return f"sqlite:///{copy}"
    source, target = db.make_engine(f"sqlite:///{copy}"), db.make_engine(database_url)
    try:
        copy_into(source, target)
    finally:
        source.dispose()
        target.dispose()
    return database_url


def test_the_committed_file_is_the_first_schema_and_self_contained() -> None:
    assert DATA.is_file() and DATA.stat().st_size < 200_000
    conn = sqlite3.connect(f"file:{DATA}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # no -wal needed
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        columns = {r[1] for r in conn.execute("PRAGMA table_info(message)")}
        assert "turn" not in columns and "details" not in columns  # added by 0002 and 0003
    finally:
        conn.close()


def test_upgrading_the_first_released_database_keeps_every_row(
    old_database: str, tmp_path: Path, openai_server: OpenAITestServer
) -> None:
    engine = db.make_engine(old_database)
    try:
        assert revision(engine) == "0001"
        before = read_rows(engine)
    finally:
        engine.dispose()
    counts = {name: len(rows) for name, rows in before.items()}
    assert counts == {
        "app_state": 1,
        "provider": 3,
        "model_card": 3,
        "conversation": 6,
        "message": 18,
        "usage_event": 9,
    }

    # A normal start with the key the data was saved under: migrate to head, seed (a no-op).
    ws = Workspace.open(
        make_settings(
            tmp_path / "home",
            old_database,
            PLUGBOARD_SECRET_KEY=SECRET_KEY,
            PLUGBOARD_MAX_RETRIES="0",
        )
    )
    try:
        head = ScriptDirectory.from_config(db.alembic_config(ws.engine)).get_current_head()
        assert revision(ws.engine) == head != "0001"
        with ws.engine.connect() as conn:
            drift = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
            )
        assert drift == []  # the upgraded schema is exactly what tables.py declares

        # Every row, every 0001 column, the same value.
        old_columns = {
            name: list(next(iter(rows.values())).keys()) for name, rows in before.items()
        }
        after = read_rows(ws.engine, old_columns)
        for name, rows in before.items():
            assert {key: after[name].get(key) for key in rows} == rows, name

        # New columns: 0003 numbered the turns of each conversation; 0002's details are empty.
        new = read_rows(ws.engine)
        turns = {i: (m["conversation_id"], m["role"], m["turn"]) for i, m in new["message"].items()}
        assert [turns[i] for i in sorted(turns)] == [
            (1, "user", 0),
            (1, "assistant", 0),
            (1, "user", 1),
            (1, "assistant", 1),
            (2, "user", 0),
            (2, "assistant", 0),
            (2, "user", 1),
            (2, "assistant", 1),
            (3, "user", 0),
            (3, "assistant", 0),
            (3, "user", 1),
            (3, "assistant", 1),
            (4, "user", 0),
            (4, "assistant", 0),
            (5, "user", 0),
            (5, "assistant", 0),
            (6, "user", 0),
            (6, "assistant", 0),
        ]
        assert {m["details"] for m in new["message"].values()} == {None}
        if ws.engine.dialect.name == "sqlite":
            with ws.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1

        check_through_the_app(ws, before, openai_server)
    finally:
        ws.close()


def check_through_the_app(ws: Workspace, before: Rows, server: OpenAITestServer) -> None:
    """What a person sees after the upgrade: the same cards, keys, chats and figures."""
    cards = {c.display_name: c for c in catalog.list_cards(ws)}
    assert set(cards) == {BUNDLED_LABEL, "GPT-4o mini", "Gateway Llama"}
    gpt, gateway = cards["GPT-4o mini"], cards["Gateway Llama"]
    assert gpt.tags == ["openai", "fast"] and gpt.context_length == 8192
    assert gpt.default_params == {"temperature": 0.7, "max_tokens": 512, "top_p": 0.95}
    assert gpt.last_test_ok is True and gateway.last_test_ok is False and not gateway.enabled
    assert gpt.provider.extra_headers == {"OpenAI-Organization": "org-plugboard"}
    assert (gpt.provider.connect_timeout, gpt.provider.read_timeout) == (10.0, 120.0)
    assert gpt.provider.masked_key == "sk-…5b1d"

    # The keys decrypt with the key they were saved under, and only with it.
    target = catalog.target_for(ws, gpt.id)
    assert (target.auth.type, target.auth.secret) == ("bearer", OPENAI_KEY)
    keyed = catalog.target_for(ws, gateway.id)
    assert keyed.request_headers()["X-API-Key"] == f"Token {GATEWAY_KEY}"
    token = before["provider"][gpt.provider.id]["secret_token"]
    assert SecretBox([SECRET_KEY]).decrypt(token) == OPENAI_KEY

    # The chats, their statuses, errors and figures.
    conversations = {c.title: c for c in history.list_conversations(ws)}
    assert len(conversations) == 6
    sky = history.get_conversation(ws, conversations["Why is the sky blue?"].id)
    assert sky is not None and sky.system_prompt == "Answer in one sentence."
    assert sky.params == {"temperature": 0.2}
    assert [(m.role, m.content, m.turn) for m in sky.messages] == [
        ("user", "Why is the sky blue?", 0),
        ("assistant", "Echo: Why is the sky blue?", 0),
        ("user", "And why are sunsets red?", 1),
        ("assistant", "Echo: And why are sunsets red?", 1),
    ]
    reply = sky.messages[1]
    assert (reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == (17, 6, "stop")
    assert reply.ttft_ms is not None and reply.latency_ms is not None
    assert reply.created_at.tzinfo is not None and reply.created_at.year >= 2026
    unicode_title = "Résumé en français, s'il vous plaît ☀️ — 日本語も 🙂"
    unicode_chat = history.get_conversation(ws, conversations[unicode_title].id)
    assert unicode_chat is not None
    assert unicode_chat.messages[0].content == unicode_title
    assert unicode_chat.messages[2].content == LONG_PROMPT
    assert unicode_chat.messages[3].finish_reason == "length"
    joke = history.get_conversation(ws, conversations["Tell me a joke"].id)
    assert joke is not None
    assert [(m.status, m.error_kind) for m in joke.messages if m.role == "assistant"] == [
        ("error", "server"),
        ("ok", None),
    ]
    assert "(500)" in (joke.messages[1].error_message or "")
    assert "HTTP 500" in (joke.messages[1].error_detail or "")
    stopped = history.get_conversation(ws, conversations["Count to one hundred, slowly"].id)
    assert stopped is not None and stopped.messages[1].status == "stopped"
    retired = history.get_conversation(ws, conversations["hello old model"].id)
    assert retired is not None
    assert {(m.model_id, m.model_name) for m in retired.messages} == {(None, "Echo 1 (retired)")}

    # The old conversation goes on: its connection moved to this server, its key kept.
    draft = catalog.provider_draft(gpt.provider)
    draft.base_url = server.url
    catalog.update_provider(ws, gpt.provider.id, draft)
    server.api_key = OPENAI_KEY
    result = collect(
        stream_turn(
            ws,
            TurnRequest(
                model_id=gpt.id,
                prompt="And the ocean?",
                conversation_id=sky.id,
                system_prompt=sky.system_prompt,
                params=sky.params,
            ),
        )
    )
    assert result.status == "ok", result.error
    assert result.reply is not None and result.reply.turn == 2
    sent = server.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent.headers["openai-organization"] == "org-plugboard"
    assert [m["content"] for m in sent.json()["messages"]] == [
        "Answer in one sentence.",
        "Why is the sky blue?",
        "Echo: Why is the sky blue?",
        "And why are sunsets red?",
        "Echo: And why are sunsets red?",
        "And the ocean?",
    ]
    assert sent.json()["temperature"] == 0.2
    assert catalog.get_card(ws, gpt.id).provider.masked_key.endswith(OPENAI_KEY[-4:])
