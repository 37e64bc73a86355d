"""Secrets audit: a scripted session with a key of every auth type and connection kind, then a
search for those keys everywhere Plugboard writes or shows anything.

The session (the real app.py through AppTest, plus core calls where the UI has nothing to add):
  * stores keys: OpenAI-compatible bearer (typed into Manage providers), TGI bearer, Custom API
    bearer (OpenAI-style preset) and Custom API key in a custom header with a prefix; the
    bundled local model uses none;
  * uses them: a successful chat in the Sandbox with each card;
  * fails with them: wrong keys (401s, one saved through the Edit dialog), servers that echo the
    credentials back in error bodies and error events, long error bodies where the key sits
    right where messages and details are cut, 500s;
  * opens the Models details dialog (with Test connection) and the Edit dialog (with its
    request preview and Test connection) of every card, Manage providers, and every chat;
  * exports every chat as JSON, Markdown and CSV (core.export).
Then no key — nor any 8 characters in a row of what its mask hides — may appear in:
the database file and its -wal/-shm (before and after close), the log files, every element
of every screen (the protobufs the browser receives) and every session_state value, the
exports, the saved error messages and details, the connection test summaries.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from sqlmodel import select
from streamlit.testing.v1 import AppTest

from core import catalog, export, history
from core.catalog import CardView, ModelDraft, ProviderDraft
from core.inference.custom_api import PRESETS
from core.inference.local_gguf import BUNDLED_LABEL
from core.secrets import mask
from core.tables import Message as MessageRow
from core.tables import ModelCard
from core.workspace import Workspace
from tests.app.conftest import App
from tests.conftest import ROOT
from tests.servers.custom_api_server import CustomAPITestServer
from tests.servers.openai_server import OpenAITestServer
from tests.servers.tgi_server import TGITestServer

# Random bodies: no two keys share 8 characters, so a leak names the key it came from.
OPENAI_KEY = "sk-proj-Q7xK2mZ9pL4wN6vB8cX1zA5sD3fG0h"
OPENAI_WRONG = "sk-proj-R5tY8uI1oP3aS0dF6gH9jK2lZ4xC7v"
TGI_KEY = "hf_V6bN3mK8jH2gF5dS9aQ1wE4rT7yU0iOpL"
TGI_WRONG = "hf_C4xZ7aS1dF9qW3eR6tY2uI8oP5lK0jHgB"
CUSTOM_BEARER = "tok-Hq3Lm8Vz2Xc6Nb1Rt7Yp4Kd9Gs0Wf5Je"
CUSTOM_KEY = "key-P0oI9uY8tR7eJ4hG1fD6sA3zX5cV2bNm"
CUSTOM_WRONG = "key-L3kJ6hG9fD2sM1nB5vC8xZ4aQ7wE0rTy"
SECRETS = (
    OPENAI_KEY,
    OPENAI_WRONG,
    TGI_KEY,
    TGI_WRONG,
    CUSTOM_BEARER,
    CUSTOM_KEY,
    CUSTOM_WRONG,
)
WINDOW = 8  # the mask shows 3 + 4 characters; no 8 hidden characters in a row may show


def pieces(secret: str) -> set[str]:
    """The key, and every WINDOW-long piece of what its mask hides."""
    hidden = secret[3:-4]
    return {secret} | {hidden[i : i + WINDOW] for i in range(len(hidden) - WINDOW + 1)}


PIECES = {secret: pieces(secret) for secret in SECRETS}


class Audit:
    """Everything the session showed or wrote, by where it was seen."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> None:
        self.seen.append((where, text))

    def screen(self, app: App, where: str) -> None:
        """Every element the browser receives, and every session_state value."""
        at = app.at
        parts = []
        for node in at._tree:
            proto = getattr(node, "proto", None)
            if proto is not None:
                parts.append(str(proto))
            with contextlib.suppress(Exception):  # some elements have no repr: the proto is enough
                parts.append(repr(node))
        state = object.__getattribute__(
            at._session_state, "_state"
        )  # under the thread-safe wrapper
        parts.append(repr(state.filtered_state))
        parts.append(repr(state._old_state))
        parts.append(repr(state._new_session_state))
        parts.append(str(state.get_widget_states()))
        self.add(f"screen: {where}", "\n".join(parts))

    def leaks(self) -> list[str]:
        found = []
        for where, text in self.seen:
            for secret, needles in PIECES.items():
                hits = sorted(n for n in needles if n in text)
                if hits:
                    found.append(f"{mask(secret)} in {where}: {hits[:3]}")
        return found


def scan_bytes(data: bytes) -> str:
    """File bytes as text (UTF-8 and UTF-16, as SQLite may store either)."""
    return data.decode("utf-8", errors="replace") + data.decode("utf-16-le", errors="replace")


# --- servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _tgi() -> Iterator[TGITestServer]:
    server = TGITestServer(api_key=TGI_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def _custom() -> Iterator[CustomAPITestServer]:
    server = CustomAPITestServer(
        token=CUSTOM_BEARER,
        api_key=CUSTOM_KEY,
        api_key_header="X-Plugboard-Key",
        api_key_prefix="Key",
    ).start()
    yield server
    server.stop()


@pytest.fixture
def tgi(_tgi: TGITestServer) -> TGITestServer:
    _tgi.reset()
    return _tgi


@pytest.fixture
def custom(_custom: CustomAPITestServer) -> CustomAPITestServer:
    _custom.reset()
    return _custom


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "plugboard-home"
    monkeypatch.setenv("PLUGBOARD_HOME", str(path))
    for name in ("DATABASE_URL", "PLUGBOARD_SECRET_KEY", "PLUGBOARD_OLD_SECRET_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLUGBOARD_MAX_RETRIES", "0")
    monkeypatch.setenv("PLUGBOARD_MAX_RETRY_WAIT", "1")
    st.cache_resource.clear()
    st.cache_data.clear()
    yield path
    st.cache_resource.clear()


# --- the session's steps ----------------------------------------------------------------------


def sandbox_chat(app: App, audit: Audit, card: CardView, prompt: str, **params: Any) -> App:
    """A new chat with `card` in the Sandbox; returns after the reply is drawn."""
    app.at.session_state["sandbox.model"] = card.id
    app.at.session_state["sandbox.conversation_id"] = None
    app.go("sandbox")
    for name, value in params.items():
        app.at.number_input(key=f"sandbox.params.{card.id}.{name}").set_value(value)
    app.chat(prompt)
    audit.screen(app, f"Sandbox, {card.display_name}: {prompt}")
    return app


def last_reply(ws: Workspace) -> MessageRow:
    with ws.session() as session:
        rows = session.exec(select(MessageRow).order_by(MessageRow.id.desc())).all()  # type: ignore[union-attr]
    return next(m for m in rows if m.role == "assistant")


def set_key(ws: Workspace, card: CardView, key: str) -> None:
    draft = catalog.provider_draft(catalog.get_card(ws, card.id).provider)
    draft.api_key = key
    catalog.update_model(ws, card.id, catalog.model_draft(card), draft)


def edit_key_in_the_dialog(app: App, audit: Audit, card: CardView, key: str) -> None:
    app.go("models").menu(card.id, "Edit")
    assert app.text_input("API key").value == ""  # a stored key is never sent to the browser
    app.type("API key", key)
    app.click("Save custom model")
    assert f"Saved “{card.display_name}”." in app.toasts
    audit.screen(app, f"after saving a key in Edit, {card.display_name}")


def dialogs(app: App, audit: Audit, card: CardView) -> None:
    """Details (and its Test connection), then Edit (preview, Test connection, Cancel)."""
    app.go("models").menu(card.id, "View details")
    audit.screen(app, f"details of {card.display_name}")
    if card.provider.has_key:
        assert f"`{card.provider.masked_key}`" in app.everything()
    app.click("Test connection")
    audit.screen(app, f"details test of {card.display_name}")
    app.go("models").menu(card.id, "Edit")
    audit.screen(app, f"edit of {card.display_name}")
    if card.provider.auth_type != "none":
        assert app.text_input("API key").value == ""
    app.click("Test connection")
    audit.screen(app, f"edit test of {card.display_name}")
    app.click("Cancel")


def test_no_key_anywhere_after_a_session_with_every_auth_type_and_kind(
    home: Path,
    openai_server: OpenAITestServer,
    tgi: TGITestServer,
    custom: CustomAPITestServer,
) -> None:
    audit = Audit()
    app = App(AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)).run()
    from ui.deps import workspace

    ws = workspace()
    openai_server.api_key = OPENAI_KEY

    # --- keys stored: one typed into Manage providers, the others saved by the catalog --------
    app.go("providers")
    app.type("Endpoint URL", openai_server.url).type("API key", OPENAI_KEY)
    app.type("Model name", "test-model").type("Display name", "OpenAI audit")
    app.click("Test connection")
    assert "The connection works." in app.texts("success")
    app.click("Add custom model")
    assert "Added “OpenAI audit”." in app.toasts
    audit.screen(app, "Manage providers after adding")
    openai = catalog.find_card(ws, "OpenAI audit")
    assert openai is not None and openai.provider.masked_key == mask(OPENAI_KEY)

    tgi_card = catalog.add_custom_model(
        ws,
        ProviderDraft(
            name="TGI audit",
            kind="tgi",
            base_url=tgi.url,
            auth_type="bearer",
            api_key=TGI_KEY,
            settings={"chat_template": "chatml"},
        ),
        ModelDraft("TGI audit", context_length=2048, default_params={"max_tokens": 20}),
    )
    preset = PRESETS["openai_chat"]
    bearer_card = catalog.add_custom_model(
        ws,
        ProviderDraft(
            name="Custom bearer audit",
            kind="custom_api",
            base_url=f"{custom.url}/v1/chat/completions",
            auth_type="bearer",
            api_key=CUSTOM_BEARER,
            settings={
                "preset": "openai_chat",
                "request_expression": preset.request_expression,
                "response_expression": preset.response_expression,
            },
        ),
        ModelDraft("Custom bearer audit", remote_model="mistralai/Mistral-7B-Instruct-v0.3"),
    )
    keyed_card = catalog.add_custom_model(
        ws,
        ProviderDraft(
            name="Custom keyed audit",
            kind="custom_api",
            base_url=f"{custom.url}/keyed/echo-batch",
            auth_type="api_key",
            auth_header="X-Plugboard-Key",
            auth_prefix="Key",
            api_key=CUSTOM_KEY,
            settings={"preset": "passthrough", "response_type": "string"},
        ),
        ModelDraft("Custom keyed audit"),
    )
    local = catalog.find_card(ws, BUNDLED_LABEL)
    assert local is not None and local.provider.auth_type == "none"
    cards = [openai, tgi_card, bearer_card, keyed_card, local]

    # --- the keys work -----------------------------------------------------------------------
    for card in cards[:4]:
        sandbox_chat(app, audit, card, f"hello {card.display_name}")
        assert not app.errors, (card.display_name, app.errors)
        assert last_reply(ws).status == "ok"
    sandbox_chat(app, audit, local, "Say hi.", max_tokens=4)
    assert last_reply(ws).status == "ok"
    assert openai_server.requests[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert custom.requests_to("/keyed/echo-batch")[-1].headers["x-plugboard-key"] == (
        f"Key {CUSTOM_KEY}"
    )

    # --- servers that repeat the key back -----------------------------------------------------
    openai_server.fault(
        "status", status=500, message=f"upstream rejected Authorization: Bearer {OPENAI_KEY}"
    )
    sandbox_chat(app, audit, openai, "a server error that repeats the key")
    assert "The model server failed." in app.errors[0]
    # The key right where the message (500 characters) and the details (2000) are cut.
    for cut, before in ((500, 0), (2000, len('{"error": {"message": "'))):
        message = "x" * (cut - before - 24) + f"{OPENAI_KEY} was refused"  # 24 chars before
        openai_server.fault("status", status=500, message=message)
        sandbox_chat(app, audit, openai, f"the key at character {cut}")
        assert last_reply(ws).error_kind == "server"
    openai_server.fault("error_event", after=1, message=f"token {OPENAI_KEY} expired mid-stream")
    sandbox_chat(app, audit, openai, "an error event mid-stream")
    tgi.fault("status", status=500, error=f"Request failed: bad token {TGI_KEY}")
    sandbox_chat(app, audit, tgi_card, "tgi error with the key")
    custom.fault("echo_auth", status=500)
    sandbox_chat(app, audit, bearer_card, "custom error with the key")
    assert "Upstream refused Bearer" in app.errors[0] and mask(CUSTOM_BEARER) in app.errors[0]

    # --- wrong keys ---------------------------------------------------------------------------
    edit_key_in_the_dialog(app, audit, openai, OPENAI_WRONG)
    sandbox_chat(app, audit, openai, "with the wrong key")
    assert "rejected the API key (401)" in app.errors[0]
    set_key(ws, tgi_card, TGI_WRONG)
    sandbox_chat(app, audit, tgi_card, "tgi with the wrong key")
    assert "(401)" in app.errors[0]
    edit_key_in_the_dialog(app, audit, keyed_card, CUSTOM_WRONG)
    sandbox_chat(app, audit, keyed_card, "custom with the wrong key")
    assert "(401)" in app.errors[0] and mask(CUSTOM_WRONG) in app.errors[0]  # repeated, masked

    # --- every card's dialogs, with the wrong keys, then the right ones ------------------------
    for card in cards[:4]:
        dialogs(app, audit, catalog.get_card(ws, card.id))
    set_key(ws, openai, OPENAI_KEY)
    set_key(ws, tgi_card, TGI_KEY)
    set_key(ws, keyed_card, CUSTOM_KEY)
    custom.fault("echo_auth", status=500)  # the Edit dialog's test exchange meets it
    for card in cards:
        dialogs(app, audit, catalog.get_card(ws, card.id))
    app.go("providers")
    audit.screen(app, "Manage providers")

    # --- every chat again, and its exports ----------------------------------------------------
    conversations = history.list_conversations(ws, limit=100)
    assert len(conversations) == 14
    for conversation in conversations:
        app.at.session_state["sandbox.conversation_id"] = conversation.id
        app.go("sandbox")
        audit.screen(app, f"chat {conversation.title!r}")
        data = export.conversation_data(ws, conversation.id)
        for render in (export.to_json, export.to_markdown, export.to_csv):
            audit.add(f"{render.__name__} of {conversation.title!r}", render(data))
        full = history.get_conversation(ws, conversation.id)
        audit.add(f"views of {conversation.title!r}", repr(full))

    # --- what was saved -----------------------------------------------------------------------
    with ws.session() as session:
        messages = session.exec(select(MessageRow)).all()
        errors = [m for m in messages if m.status == "error"]
        for m in messages:
            audit.add(f"message {m.id}", json.dumps(m.model_dump(mode="json")))
        for card_row in session.exec(select(ModelCard)).all():
            audit.add(f"test summary of {card_row.display_name}", card_row.last_test_summary)
    assert len(errors) == 9 and all(m.error_message and m.error_detail for m in errors)
    assert any(mask(OPENAI_KEY) in (m.error_message or "") for m in errors)  # masked, not lost
    for view in [*catalog.list_cards(ws), *catalog.list_providers(ws)]:
        audit.add(f"view {view.id}", repr(view))

    def files(label: str) -> None:
        names = sorted(p.name for p in home.iterdir() if p.is_file())
        assert "plugboard.db" in names and "plugboard.log" in names, names
        for path in home.iterdir():
            if path.is_file() and path.name != "secret.key":
                audit.add(f"{path.name} {label}", scan_bytes(path.read_bytes()))

    files("(open)")
    log = (home / "plugboard.log").read_text()
    assert "turn failed" in log and mask(OPENAI_KEY) in log  # failures logged, keys masked
    ws.close()  # a checkpoint moves the WAL into the database file
    files("(closed)")

    leaks = audit.leaks()
    assert not leaks, "\n".join(leaks)
    assert len(audit.seen) > 100
