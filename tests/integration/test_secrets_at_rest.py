"""A stored API key never reaches the disk in clear: not the database, its WAL, nor the log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
from sqlalchemy import text

from core import catalog, history
from core.catalog import ModelDraft
from core.chat import TurnRequest, TurnResult, collect, stream_turn
from core.inference.registry import make_adapter
from core.tables import Provider
from core.workspace import Workspace
from tests.integration.core_helpers import add_openai_card, message_rows, openai_provider
from tests.servers.openai_server import OpenAITestServer

SECRET = "sk-plugboard-SECRET-0123456789abcdef"
WRONG = "sk-plugboard-WRONG-fedcba9876543210"

MakeWorkspace = Callable[..., Workspace]


def run(ws: Workspace, card_id: int, prompt: str) -> TurnResult:
    return collect(stream_turn(ws, TurnRequest(model_id=card_id, prompt=prompt)))


def set_key(ws: Workspace, card: catalog.CardView, server: OpenAITestServer, key: str) -> None:
    catalog.update_model(
        ws,
        card.id,
        ModelDraft(card.display_name, card.remote_model),
        openai_provider(server, name=card.provider.name, api_key=key),
    )


def exercise(ws: Workspace, server: OpenAITestServer) -> list[TurnResult]:
    """Use the key successfully, with a wrong key, and against servers that misbehave."""
    server.api_key = SECRET
    card = add_openai_card(ws, server, api_key=SECRET)
    results = [run(ws, card.id, "hello with the right key")]
    assert results[0].status == "ok", results[0].error
    assert server.requests[-1].headers["authorization"] == f"Bearer {SECRET}"

    # A server that echoes the credentials it got in its error body.
    server.fault("status", status=500, message=f"upstream rejected Authorization: Bearer {SECRET}")
    results.append(run(ws, card.id, "server error"))
    server.fault("error_event", after=1, message=f"token {SECRET} expired mid-stream")
    results.append(run(ws, card.id, "error event mid stream"))

    set_key(ws, card, server, WRONG)
    results.append(run(ws, card.id, "hello with the wrong key"))
    assert server.requests[-1].headers["authorization"] == f"Bearer {WRONG}"
    report = make_adapter(catalog.target_for(ws, card.id), ws.client).test_connection()
    assert not report.ok
    catalog.record_test(ws, card.id, report)

    set_key(ws, card, server, SECRET)
    server.api_key = None
    server.fault("status", status=400, message=f"bad request from key {SECRET}")
    results.append(run(ws, card.id, "bad request"))

    assert [r.status for r in results] == ["ok", "error", "error", "error", "error"]
    assert [r.error.kind for r in results[1:] if r.error] == [
        "server",
        "server",
        "auth",
        "bad_request",
    ]
    return results


def assert_no_secret(data: bytes | str, where: str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for secret in (SECRET, WRONG):
        assert secret.encode() not in blob, f"{secret} found in {where}"
        assert secret.encode("utf-16-le") not in blob, f"{secret} (UTF-16) found in {where}"


def test_no_plaintext_key_on_disk_in_messages_or_views(
    make_workspace: MakeWorkspace, openai_server: OpenAITestServer
) -> None:
    ws = make_workspace(PLUGBOARD_MAX_RETRIES="0")
    results = exercise(ws, openai_server)

    # Errors and their details are saved without the key (masked where it was echoed).
    rows = message_rows(ws)
    errors = [m for m in rows if m.status == "error"]
    assert len(errors) == 4
    for message in errors:
        assert message.error_message and message.error_detail
        assert_no_secret(message.error_message, "error_message")
        assert_no_secret(message.error_detail, "error_detail")
    assert any("sk-…cdef" in (m.error_message or "") for m in errors)  # masked, not dropped
    for result in results:
        if result.error:
            assert_no_secret(f"{result.error} {result.error.detail}", "the TurnResult")
    conversation = history.get_conversation(ws, rows[0].conversation_id)
    assert conversation is not None
    assert_no_secret(repr(conversation), "the conversation view")

    # Views carry only the masked key.
    card = catalog.list_cards(ws, search="Echo model")[0]
    assert card.provider.masked_key == "sk-…cdef"
    assert card.last_test_ok is False and "401" in card.last_test_summary
    for view in (card, *catalog.list_providers(ws), catalog.get_card(ws, card.id)):
        assert_no_secret(repr(view), "a view")
        assert_no_secret(repr(asdict(view)), "a view's fields")
    assert_no_secret(repr(catalog.target_for(ws, card.id)), "the target's repr")

    # The stored token is ciphertext that decrypts to the key.
    with ws.session() as session:
        row = session.get(Provider, card.provider.id)
        assert row is not None and row.secret_token
        assert ws.box.decrypt(row.secret_token) == SECRET

    # The raw bytes of everything in PLUGBOARD_HOME: the database, its WAL, the log.
    home = ws.settings.home
    files = {p.name: p for p in home.iterdir() if p.is_file()}
    assert "plugboard.db" in files and "plugboard.log" in files
    log = files["plugboard.log"].read_text()
    assert "turn failed" in log and "(401)" in log  # the failures were logged…
    assert "sk-…cdef" in log  # …with the echoed key masked
    for name, path in files.items():
        assert_no_secret(path.read_bytes(), name)
    ws.close()  # a checkpoint moves the WAL into the database file: check that too
    for path in home.iterdir():
        if path.is_file():
            assert_no_secret(path.read_bytes(), f"{path.name} after close")


def test_no_plaintext_key_in_any_postgresql_row(
    make_workspace: MakeWorkspace, openai_server: OpenAITestServer, pg_url: str
) -> None:
    ws = make_workspace(pg_url, PLUGBOARD_MAX_RETRIES="0")
    exercise(ws, openai_server)
    with ws.engine.connect() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars()
        dumped = 0
        for table in list(tables):
            for row in conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars():
                assert_no_secret(row, f"table {table}")
                dumped += 1
    assert dumped > 10  # the rows were really there to look at
    log_path: Path = ws.settings.log_path
    assert_no_secret(log_path.read_bytes(), "plugboard.log")


def test_a_key_in_the_url_is_refused_so_it_is_never_stored(
    workspace: Workspace, openai_server: OpenAITestServer
) -> None:
    url = openai_server.url.replace("http://", f"http://user:{SECRET}@")
    with pytest.raises(catalog.ValidationFailed) as caught:
        add_openai_card(workspace, url)
    assert set(caught.value.errors) == {"base_url"}
    assert_no_secret(str(caught.value), "the validation message")
