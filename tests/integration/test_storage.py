"""Storage on real SQLite files and a real PostgreSQL: migrations, pragmas, cascades, seeding."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlmodel import Session, SQLModel, col, select

from core import catalog, db, history, seed
from core.catalog import ModelDraft
from core.inference.local_gguf import BUNDLED, BUNDLED_LABEL, DEFAULT_CONTEXT
from core.tables import AppState, Conversation, ModelCard, Provider, UsageEvent
from core.tables import Message as MessageRow
from core.workspace import Workspace
from tests.conftest import ROOT
from tests.integration.core_helpers import add_openai_card, message_rows, usage_events

MakeWorkspace = Callable[..., Workspace]
TABLES = {"app_state", "provider", "model_card", "conversation", "message", "usage_event"}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


def head_revision(engine: Engine) -> str:
    head = ScriptDirectory.from_config(db.alembic_config(engine)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema_drift(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


# --- migrations -------------------------------------------------------------------------------


def test_migrations_create_every_table(engine: Engine) -> None:
    assert set(inspect(engine).get_table_names()) == set()
    db.migrate(engine)
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) >= TABLES
    assert tables == set(SQLModel.metadata.tables) | {"alembic_version"}
    for name, table in SQLModel.metadata.tables.items():
        columns = {c["name"] for c in inspect(engine).get_columns(name)}
        assert columns == set(table.columns.keys()), name
    assert schema_drift(engine) == []  # the migrations build exactly what tables.py declares
    assert current_revision(engine) == head_revision(engine)


def test_migrating_twice_is_harmless(engine: Engine) -> None:
    db.migrate(engine)
    with Session(engine) as session:
        session.add(AppState(key="marker", value="still here"))
        session.commit()
    db.migrate(engine)
    db.migrate(engine, "head")
    with Session(engine) as session:
        assert session.get(AppState, "marker") is not None
    assert current_revision(engine) == head_revision(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def _old_rows(conn: Connection) -> None:
    """A provider, a card and a two-turn conversation, in SQL that every revision accepts."""
    now = "2026-01-01 00:00:00"
    conn.execute(
        text(
            "INSERT INTO provider (id, name, kind, base_url, auth_type, auth_header, auth_prefix,"
            " extra_headers, settings, created_at, updated_at) VALUES (1, 'Old', 'openai_compat',"
            " 'http://x/v1', 'none', 'Authorization', '', '{}', '{}', :now, :now)"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO model_card (id, provider_id, display_name, remote_model, description,"
            " tags, default_params, enabled, last_test_summary, created_at, updated_at)"
            " VALUES (1, 1, 'Old card', 'm', '', '[]', '{}', true, '', :now, :now)"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO conversation (id, title, mode, system_prompt, params, created_at,"
            " updated_at) VALUES (1, 'Old chat', 'chat', '', '{}', :now, :now)"
        ),
        {"now": now},
    )
    for n, role in enumerate(["user", "assistant", "user", "assistant"], start=1):
        conn.execute(
            text(
                "INSERT INTO message (id, conversation_id, lane, role, content, model_id,"
                " model_name, status, tokens_estimated, params, created_at)"
                " VALUES (:id, 1, 0, :role, :content, 1, 'Old card', 'ok', false, '{}', :now)"
            ),
            {"id": n, "role": role, "content": f"{role} {n}", "now": now},
        )


def test_a_database_at_the_first_revision_upgrades_to_head(engine: Engine) -> None:
    db.migrate(engine, "0001")
    assert current_revision(engine) == "0001"
    with engine.begin() as conn:  # data written under the old schema
        _old_rows(conn)
    db.migrate(engine)
    assert current_revision(engine) == head_revision(engine)
    assert schema_drift(engine) == []
    with Session(engine) as session:
        assert [p.name for p in session.exec(select(Provider)).all()] == ["Old"]
        assert [c.display_name for c in session.exec(select(ModelCard)).all()] == ["Old card"]
        rows = session.exec(select(MessageRow).order_by(col(MessageRow.id))).all()
        assert [(m.role, m.content, m.model_id) for m in rows] == [
            ("user", "user 1", 1),
            ("assistant", "assistant 2", 1),
            ("user", "user 3", 1),
            ("assistant", "assistant 4", 1),
        ]
        if hasattr(MessageRow, "turn"):  # 0003 numbered the turns of existing conversations
            assert [m.turn for m in rows] == [0, 0, 1, 1]


REBUILD = """
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("provider", "model_card", "message"):
        with op.batch_alter_table(table, recreate="always") as batch_op:
            batch_op.add_column(sa.Column("extra_9999", sa.Integer(), nullable=True))
"""


def test_a_future_migration_that_rebuilds_tables_keeps_the_rows_pointing_at_them(
    tmp_path: Path,
) -> None:
    """SQLite ALTERs copy a table and drop the old one. With foreign keys on, that drop would
    run ON DELETE actions: rebuilding `provider` would delete every card, and so on."""
    engine = db.init_db(f"sqlite:///{tmp_path / 'rebuild.db'}")
    with engine.begin() as conn:
        _old_rows(conn)
    scripts = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_rebuild.py").write_text(
        REBUILD.format(head=head_revision(engine))
    )
    config = db.alembic_config(engine)
    config.set_main_option("script_location", str(scripts))
    command.upgrade(config, "head")
    assert current_revision(engine) == "9999"
    with Session(engine) as session:
        assert [c.display_name for c in session.exec(select(ModelCard)).all()] == ["Old card"]
        rows = session.exec(select(MessageRow)).all()
        assert [m.model_id for m in rows] == [1, 1, 1, 1]
    with engine.connect() as conn:  # and foreign keys are back on afterwards
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_init_db_migrates_a_new_database(database_url: str) -> None:
    engine = db.init_db(database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


# Imports first, then waits for the go-file, so the processes migrate and seed at once.
FIRST_START = """
import sys, time
from pathlib import Path
from core import catalog
from core.workspace import Workspace
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.005)
ws = Workspace.open()
print(len(catalog.list_cards(ws)))
ws.close()
"""


def test_simultaneous_first_starts_on_a_new_database(database_url: str, tmp_path: Path) -> None:
    """Several processes (app, CLI, workers) starting together on an empty database: one
    migrates and seeds, the others wait and find it done. Nobody crashes."""
    go = tmp_path / "go"
    processes, ready = [], []
    for n in range(3):
        ready.append(tmp_path / f"ready{n}")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PLUGBOARD_HOME": str(tmp_path / f"home{n}"),
            "DATABASE_URL": database_url,
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", FIRST_START, str(ready[n]), str(go)],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        while not all(r.exists() for r in ready):
            if any(p.poll() is not None for p in processes):
                break
            threading.Event().wait(0.005)
        go.touch()
        outputs = [p.communicate(timeout=120) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
        assert out.strip() == "1"  # each saw exactly the one bundled card
    engine = db.make_engine(database_url)
    try:
        with Session(engine) as session:
            assert len(session.exec(select(ModelCard)).all()) == 1
            assert len(session.exec(select(Provider)).all()) == 1
    finally:
        engine.dispose()


# --- SQLite connection setup ------------------------------------------------------------------


def test_sqlite_pragmas_are_on_for_every_connection(tmp_path: Path) -> None:
    engine = db.init_db(f"sqlite:///{tmp_path / 'deep' / 'folder' / 'p.db'}")
    try:
        assert (tmp_path / "deep" / "folder" / "p.db").is_file()  # parent folders created
        # Distinct pooled connections, held at once (raw: no transaction, so no write lock).
        connections = [engine.raw_connection() for _ in range(3)]

        def pragma(conn: object, name: str) -> object:
            cursor = conn.cursor()  # type: ignore[attr-defined]
            try:
                return cursor.execute(f"PRAGMA {name}").fetchone()[0]
            finally:
                cursor.close()

        for conn in connections:
            assert pragma(conn, "journal_mode") == "wal"
            assert pragma(conn, "foreign_keys") == 1
            assert pragma(conn, "busy_timeout") == db.BUSY_TIMEOUT_MS
            assert pragma(conn, "synchronous") == 1  # NORMAL
        for conn in connections:
            conn.close()
        with engine.connect() as conn:  # and through SQLAlchemy's own connections
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_sqlite_enforces_foreign_keys(tmp_path: Path) -> None:
    engine = db.init_db(f"sqlite:///{tmp_path / 'fk.db'}")
    try:
        with pytest.raises(Exception, match="FOREIGN KEY"), Session(engine) as session:
            session.add(ModelCard(provider_id=424242, display_name="orphan"))
            session.commit()
    finally:
        engine.dispose()


def test_concurrent_writers_wait_instead_of_failing(tmp_path: Path) -> None:
    """Read-then-write transactions from several threads: no "database is locked"."""
    engine = db.init_db(f"sqlite:///{tmp_path / 'busy.db'}")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                with db.session_scope(engine) as session:
                    session.exec(select(AppState)).all()  # a read first, then a write
                    session.add(AppState(key=f"w{n}-{i}", value="x"))
        except BaseException as exc:  # noqa: BLE001 — collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        with Session(engine) as session:
            assert len(session.exec(select(AppState)).all()) == 60
    finally:
        engine.dispose()


def test_session_scope_rolls_back_on_error(engine: Engine) -> None:
    db.migrate(engine)
    with pytest.raises(RuntimeError), db.session_scope(engine) as session:
        session.add(AppState(key="half-done", value="x"))
        session.flush()
        raise RuntimeError("boom")
    with Session(engine) as session:
        assert session.get(AppState, "half-done") is None


# --- deletes ----------------------------------------------------------------------------------


def _conversation_with_turn(ws: Workspace, card_id: int, name: str) -> int:
    conversation = history.create_conversation(ws, title="About the weather")
    history.add_message(
        ws,
        conversation.id,
        MessageRow(
            conversation_id=0,
            role="user",
            content="Will it rain?",
            model_id=card_id,
            model_name=name,
        ),
    )
    history.add_message(
        ws,
        conversation.id,
        MessageRow(
            conversation_id=0,
            role="assistant",
            content="Probably.",
            model_id=card_id,
            model_name=name,
            prompt_tokens=5,
            completion_tokens=2,
        ),
    )
    with ws.session() as session:
        card = session.get(ModelCard, card_id)
        assert card is not None
        session.add(UsageEvent(model_id=card_id, model_name=name, provider_id=card.provider_id))
    return conversation.id


def test_deleting_a_provider_deletes_its_cards(
    make_workspace: MakeWorkspace, database_url: str
) -> None:
    ws = make_workspace(database_url)
    first = add_openai_card(ws, "http://127.0.0.1:9/v1", display_name="One")
    second = catalog.create_model(ws, first.provider.id, ModelDraft("Two", "two"))
    other = add_openai_card(ws, "http://127.0.0.1:9/v1", display_name="Elsewhere")
    conversation_id = _conversation_with_turn(ws, second.id, "Two")

    catalog.delete_provider(ws, first.provider.id)

    with ws.session() as session:
        remaining = session.exec(select(ModelCard.display_name).order_by(col(ModelCard.id)))
        assert list(remaining) == [BUNDLED_LABEL, "Elsewhere"]
        assert session.get(Provider, other.provider.id) is not None
    # The conversation outlives the connection and its cards.
    rows = message_rows(ws, conversation_id)
    assert [(m.role, m.model_id, m.model_name) for m in rows] == [
        ("user", None, "Two"),
        ("assistant", None, "Two"),
    ]
    [event] = usage_events(ws)
    assert event.model_id is None and event.provider_id is None and event.model_name == "Two"


def test_deleting_a_card_keeps_its_conversations_readable(
    make_workspace: MakeWorkspace, database_url: str
) -> None:
    ws = make_workspace(database_url)
    card = add_openai_card(ws, "http://127.0.0.1:9/v1", display_name="Soon gone")
    conversation_id = _conversation_with_turn(ws, card.id, "Soon gone")

    catalog.delete_model(ws, card.id)

    conversation = history.get_conversation(ws, conversation_id)
    assert conversation is not None and conversation.title == "About the weather"
    assert [(m.role, m.content, m.model_id, m.model_name) for m in conversation.messages] == [
        ("user", "Will it rain?", None, "Soon gone"),
        ("assistant", "Probably.", None, "Soon gone"),
    ]
    assert conversation.messages[1].completion_tokens == 2
    [event] = usage_events(ws)
    assert event.model_id is None and event.model_name == "Soon gone"
    assert event.provider_id == card.provider.id  # the connection itself is still there
    assert catalog.get_provider(ws, card.provider.id).name == card.provider.name


def test_deleting_a_conversation_deletes_its_messages(
    make_workspace: MakeWorkspace, database_url: str
) -> None:
    ws = make_workspace(database_url)
    card = add_openai_card(ws, "http://127.0.0.1:9/v1")
    kept = _conversation_with_turn(ws, card.id, card.display_name)
    gone = _conversation_with_turn(ws, card.id, card.display_name)
    history.delete_conversation(ws, gone)
    assert history.get_conversation(ws, gone) is None
    assert {m.conversation_id for m in message_rows(ws)} == {kept}
    assert len(usage_events(ws)) == 2  # usage history is not tied to conversations


# --- first-run seeding ------------------------------------------------------------------------


def _bundled_cards(ws: Workspace) -> list[catalog.CardView]:
    return [c for c in catalog.list_cards(ws) if c.provider.base_url == BUNDLED]


def test_first_run_creates_the_bundled_card_once(
    make_workspace: MakeWorkspace, database_url: str
) -> None:
    ws = make_workspace(database_url)
    [card] = catalog.list_cards(ws)
    assert card.display_name == BUNDLED_LABEL == "Gemma 3 270M (local)"
    assert card.kind == "local_gguf" and card.provider.name == seed.LOCAL_PROVIDER
    assert card.provider.base_url == BUNDLED and card.provider.auth_type == "none"
    assert card.provider.settings == {"chat_template": "plain"}
    assert card.context_length == DEFAULT_CONTEXT and card.enabled
    assert {"local", "offline"} <= set(card.tags)

    again = make_workspace(database_url)  # a second start on the same database
    assert [c.id for c in catalog.list_cards(again)] == [card.id]
    with again.session() as session:
        assert seed.ensure_defaults(session) is False
        assert seed.has_bundled(session)
        assert session.get(AppState, seed.FLAG) is not None


def test_a_deleted_bundled_card_stays_deleted(
    make_workspace: MakeWorkspace, database_url: str
) -> None:
    ws = make_workspace(database_url)
    [card] = _bundled_cards(ws)
    catalog.delete_provider(ws, card.provider.id)
    assert catalog.list_cards(ws) == []

    restarted = make_workspace(database_url)
    assert catalog.list_cards(restarted) == []
    assert catalog.list_providers(restarted) == []
    with restarted.session() as session:
        assert not seed.has_bundled(session)


def test_adding_the_bundled_model_again_picks_free_names(
    make_workspace: MakeWorkspace, database_url: str
) -> None:
    ws = make_workspace(database_url)
    with ws.session() as session:
        seed.add_bundled(session)
    names = sorted((c.display_name, c.provider.name) for c in _bundled_cards(ws))
    assert names == [
        (BUNDLED_LABEL, seed.LOCAL_PROVIDER),
        (f"{BUNDLED_LABEL} (2)", f"{seed.LOCAL_PROVIDER} (2)"),
    ]


def test_without_seeding_the_database_is_empty(
    make_workspace: MakeWorkspace, database_url: str
) -> None:
    ws = make_workspace(database_url, seed=False)
    assert catalog.list_cards(ws) == []
    with ws.session() as session:
        assert session.exec(select(Conversation)).all() == []
        assert session.get(AppState, seed.FLAG) is None
