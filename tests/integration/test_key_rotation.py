"""Key rotation: `python -m core rotate-keys` re-encrypts every stored API key under the new
PLUGBOARD_SECRET_KEY, after which the old key is no longer needed (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlmodel import col, select

from core import catalog
from core.catalog import ModelDraft, ProviderDraft
from core.chat import TurnRequest, collect, stream_turn
from core.cli import EXIT_FAILED, main
from core.rotation import rotate_stored_secrets
from core.secrets import SecretBox, SecretKeyMismatch
from core.tables import Provider
from core.workspace import Workspace
from tests.conftest import ROOT, make_settings
from tests.servers.openai_server import OpenAITestServer

MakeWorkspace = Callable[..., Workspace]

OLD = Fernet.generate_key().decode()
OLDER = "an older passphrase, not a Fernet key"
NEW = Fernet.generate_key().decode()
BEARER = "sk-rotation-bearer-0123456789abcdef"
HEADER_KEY = "key-rotation-header-0123456789abcdef"
MISMATCH = "PLUGBOARD_SECRET_KEY changed. Set the old key in PLUGBOARD_OLD_SECRET_KEYS"


def tokens(ws: Workspace) -> dict[str, str | None]:
    with ws.session() as session:
        rows = session.exec(select(Provider).order_by(col(Provider.id))).all()
        return {p.name: p.secret_token for p in rows}


def populate(ws: Workspace, server: OpenAITestServer) -> int:
    """Connections of each auth type; returns the id of the card that can chat."""
    card = catalog.add_custom_model(
        ws,
        ProviderDraft(name="Bearer", kind="openai_compat", base_url=server.url, api_key=BEARER),
        ModelDraft(display_name="Echo", remote_model="test-model"),
    )
    catalog.add_custom_model(
        ws,
        ProviderDraft(
            name="Header",
            kind="openai_compat",
            base_url=server.url,
            auth_type="api_key",
            auth_header="X-Api-Key",
            auth_prefix="Token",
            api_key=HEADER_KEY,
        ),
        ModelDraft(display_name="Keyed", remote_model="test-model"),
    )
    catalog.add_custom_model(
        ws,
        ProviderDraft(name="Open", kind="openai_compat", base_url=server.url, auth_type="none"),
        ModelDraft(display_name="Open", remote_model="test-model"),
    )
    return card.id


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Point the process environment (what the CLI reads) at a home, a database and keys."""

    def set_env(home: Path, database_url: str, key: str, old: str = "") -> None:
        monkeypatch.setenv("PLUGBOARD_HOME", str(home))
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("PLUGBOARD_SECRET_KEY", key)
        monkeypatch.setenv("PLUGBOARD_OLD_SECRET_KEYS", old)

    yield set_env


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_rotate_keys_then_only_the_new_key_is_needed(
    make_workspace: MakeWorkspace,
    database_url: str,
    openai_server: OpenAITestServer,
    env: Callable[..., None],
) -> None:
    openai_server.api_key = BEARER
    before = make_workspace(database_url, PLUGBOARD_SECRET_KEY=OLD)
    card_id = populate(before, openai_server)
    old_tokens = tokens(before)
    assert {name for name, t in old_tokens.items() if t} == {"Bearer", "Header"}
    home = before.settings.home

    # python -m core rotate-keys, with the new key and the old one.
    env(home, database_url, NEW, f"{OLDER}, {OLD}")
    code, out, err = cli("rotate-keys")
    assert (code, err) == (0, "")
    assert "Re-encrypted 2 stored API keys under PLUGBOARD_SECRET_KEY." in out
    assert "PLUGBOARD_OLD_SECRET_KEYS is no longer needed" in out

    # The ciphertexts changed; keyless connections stayed keyless.
    after = make_workspace(database_url, PLUGBOARD_SECRET_KEY=NEW)
    new_tokens = tokens(after)
    assert set(new_tokens) == set(old_tokens)
    for name, token in new_tokens.items():
        if old_tokens[name] is None:
            assert token is None
        else:
            assert token and token != old_tokens[name]

    # Only the new key: everything decrypts, and the keys still work against the server.
    assert after.settings.secret_keys == (NEW,)
    new_box = SecretBox([NEW])
    assert new_box.decrypt(new_tokens["Bearer"] or "") == BEARER
    assert new_box.decrypt(new_tokens["Header"] or "") == HEADER_KEY
    assert catalog.find_card(after, "Keyed").provider.masked_key == "key…cdef"  # type: ignore[union-attr]
    result = collect(stream_turn(after, TurnRequest(model_id=card_id, prompt="still works?")))
    assert result.status == "ok", result.error
    assert openai_server.requests[-1].headers["authorization"] == f"Bearer {BEARER}"

    # Only the old key: the stored keys no longer open, with the clear message.
    old_only = make_workspace(database_url, PLUGBOARD_SECRET_KEY=OLD)
    with pytest.raises(SecretKeyMismatch, match=MISMATCH):
        old_only.box.decrypt(new_tokens["Bearer"] or "")
    card = catalog.get_card(old_only, card_id)
    assert card.provider.masked_key == "(cannot be decrypted: enter the key again in Edit)"
    failed = collect(stream_turn(old_only, TurnRequest(model_id=card_id, prompt="old key?")))
    assert failed.status == "error" and failed.error is not None
    assert failed.error.kind == "config" and MISMATCH in failed.error.message

    # Rotating again with nothing old configured is harmless (a fresh encryption, same key).
    env(home, database_url, NEW)
    code, out, _ = cli("rotate-keys")
    assert code == 0 and "Re-encrypted 2 stored API keys" in out
    assert "no longer needed" not in out
    assert SecretBox([NEW]).decrypt(tokens(after)["Header"] or "") == HEADER_KEY


def test_a_key_no_configured_key_opens_stops_the_rotation_and_changes_nothing(
    make_workspace: MakeWorkspace, openai_server: OpenAITestServer, env: Callable[..., None]
) -> None:
    ws = make_workspace(PLUGBOARD_SECRET_KEY=OLD)
    populate(ws, openai_server)
    lost = Fernet.generate_key().decode()  # a key nobody has any more
    with ws.session() as session:
        header = session.exec(select(Provider).where(Provider.name == "Header")).one()
        header.secret_token = SecretBox([lost]).encrypt(HEADER_KEY)
        session.add(header)
    before = tokens(ws)

    rotating = make_workspace(
        ws.settings.database_url, PLUGBOARD_SECRET_KEY=NEW, PLUGBOARD_OLD_SECRET_KEYS=OLD
    )
    with pytest.raises(SecretKeyMismatch, match="'Header' matches none of the configured keys"):
        rotate_stored_secrets(rotating)
    assert tokens(ws) == before  # all or nothing: "Bearer" was not rotated either

    env(ws.settings.home, ws.settings.database_url, NEW, OLD)
    code, out, err = cli("rotate-keys")
    assert (code, out) == (EXIT_FAILED, "")
    assert "Error: The API key of 'Header' matches none of the configured keys" in err
    assert "Nothing was changed" in err
    assert tokens(ws) == before


def test_rotate_keys_as_a_process(tmp_path: Path, openai_server: OpenAITestServer) -> None:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PLUGBOARD_HOME": str(home),
        "PLUGBOARD_SECRET_KEY": OLD,
    }
    env.pop("DATABASE_URL", None)
    env.pop("PLUGBOARD_OLD_SECRET_KEYS", None)
    ws = Workspace.open(make_settings(home, PLUGBOARD_SECRET_KEY=OLD))
    try:
        populate(ws, openai_server)
    finally:
        ws.close()
    done = subprocess.run(
        [sys.executable, "-m", "core", "rotate-keys"],
        cwd=ROOT,
        env={**env, "PLUGBOARD_SECRET_KEY": NEW, "PLUGBOARD_OLD_SECRET_KEYS": OLD},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Re-encrypted 2 stored API keys" in done.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "core", "models"],
        cwd=ROOT,
        env={**env, "PLUGBOARD_SECRET_KEY": NEW},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert "Keyed" in listed.stdout
    ws = Workspace.open(make_settings(home, PLUGBOARD_SECRET_KEY=NEW))
    try:
        assert catalog.target_for(ws, catalog.find_card(ws, "Keyed").id).auth.secret == HEADER_KEY  # type: ignore[union-attr]
    finally:
        ws.close()
