"""`python -m core`: the CLI on a temporary PLUGBOARD_HOME, in-process and once as a process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from core import catalog
from core.cli import EXIT_FAILED, EXIT_USAGE, main
from core.inference.local_gguf import BUNDLED_LABEL
from core.settings import load_settings
from core.workspace import Workspace
from tests.conftest import ROOT, free_port
from tests.integration.core_helpers import add_openai_card, message_rows, usage_events
from tests.servers.openai_server import OpenAITestServer

ENV_VARS = (
    "DATABASE_URL",
    "PLUGBOARD_SECRET_KEY",
    "PLUGBOARD_OLD_SECRET_KEYS",
    "PLUGBOARD_CONNECT_TIMEOUT",
    "PLUGBOARD_READ_TIMEOUT",
)


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "plugboard-home"
    monkeypatch.setenv("PLUGBOARD_HOME", str(home))
    monkeypatch.setenv("PLUGBOARD_MAX_RETRIES", "0")
    return home


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def open_home() -> Workspace:
    """The same workspace the CLI opens (settings from the environment)."""
    return Workspace.open(load_settings())


def echo_card(server: OpenAITestServer, **kw: object) -> catalog.CardView:
    ws = open_home()
    try:
        return add_openai_card(ws, server, **kw)  # type: ignore[arg-type]
    finally:
        ws.close()


# --- models -----------------------------------------------------------------------------------


def test_models_lists_the_bundled_card(home: Path) -> None:
    code, out, err = cli("models")
    assert code == 0 and err == ""
    [line] = out.splitlines()
    assert re.fullmatch(
        rf"{re.escape(BUNDLED_LABEL)}\s+Local GGUF file\s+gemma-3-270m\s+untested", line
    ), line
    assert (home / "plugboard.db").is_file()  # first run created the database


def test_models_lists_every_card_with_its_test_status(
    home: Path, openai_server: OpenAITestServer
) -> None:
    echo_card(openai_server)
    assert cli("test", "Echo model")[0] == 0
    code, out, _ = cli("models")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("Echo model ") and "OpenAI-compatible" in lines[0]
    assert "test-model" in lines[0] and lines[0].endswith("ok")
    assert lines[1].startswith(BUNDLED_LABEL) and lines[1].endswith("untested")


def test_models_with_no_cards(home: Path) -> None:
    ws = open_home()
    for card in catalog.list_cards(ws):
        catalog.delete_provider(ws, card.provider.id)
    ws.close()
    code, out, _ = cli("models")
    assert code == 0
    assert out == "No model cards yet. Add one in the app under Manage providers.\n"


# --- chat -------------------------------------------------------------------------------------


def test_chat_streams_the_reply_from_an_endpoint(
    home: Path, openai_server: OpenAITestServer
) -> None:
    echo_card(openai_server)
    code, out, err = cli(
        "chat", "echo MODEL", "why is the sky blue", "--system", "Be brief.", "--temperature", "0.5"
    )
    assert code == 0
    assert out == "Echo: why is the sky blue\n"
    assert re.fullmatch(r"\[stop; 15 in / 6 out; \d+ ms(, [\d.]+ tok/s)?\]\n", err), err
    body = openai_server.requests[-1].json()
    assert body["temperature"] == 0.5 and "max_tokens" not in body
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    ws = open_home()  # the turn was saved like any other
    try:
        assert [m.role for m in message_rows(ws)] == ["user", "assistant"]
        assert len(usage_events(ws)) == 1
    finally:
        ws.close()


def test_chat_with_the_bundled_local_model(home: Path) -> None:
    code, out, err = cli(
        "chat",
        BUNDLED_LABEL,
        "What is the capital of France?",
        "--max-tokens",
        "8",
        "--temperature",
        "0",
    )
    assert code == 0, err
    assert out.endswith("\n")
    summary = err.strip().splitlines()[-1]
    match = re.fullmatch(
        r"\[(length|stop); (\d+) in / (\d+) out; \d+ ms(, [\d.]+ tok/s)?\]", summary
    )
    assert match, summary
    assert int(match.group(2)) > 0 and 0 <= int(match.group(3)) <= 8
    assert "≈" not in summary  # llama.cpp reports real token counts


def test_chat_against_a_failing_endpoint_exits_1_with_plain_words(
    home: Path, openai_server: OpenAITestServer
) -> None:
    echo_card(openai_server)
    openai_server.api_key = "sk-the-server-wants-this-one"
    code, out, err = cli("chat", "Echo model", "hello")
    assert code == EXIT_FAILED
    assert out == "\n"
    assert err.startswith("Error: The endpoint rejected the API key (401)")
    assert "Check the key in Edit." in err
    assert "Traceback" not in err and 'File "' not in err


def test_chat_when_nothing_listens_exits_1(home: Path) -> None:
    ws = open_home()
    add_openai_card(ws, f"http://127.0.0.1:{free_port()}/v1", display_name="Gone")
    ws.close()
    code, _, err = cli("chat", "Gone", "hello")
    assert code == EXIT_FAILED
    assert err.startswith("Error: Nothing is listening at 127.0.0.1:")
    assert "Traceback" not in err


def test_chat_with_out_of_range_settings_exits_1(
    home: Path, openai_server: OpenAITestServer
) -> None:
    echo_card(openai_server)
    code, _, err = cli("chat", "Echo model", "hi", "--temperature", "9")
    assert code == EXIT_FAILED
    assert err == "Error: Check the settings: Temperature must be ≥ 0 and ≤ 2 (got 9).\n"
    assert openai_server.requests == []


def test_unknown_model_exits_2_listing_the_known_cards(
    home: Path, openai_server: OpenAITestServer
) -> None:
    echo_card(openai_server)
    for command in ("chat", "test"):
        argv = [command, "GPT-7"] + (["hello"] if command == "chat" else [])
        code, out, err = cli(*argv)
        assert code == EXIT_USAGE
        assert out == ""
        assert err == (
            f"No model card named 'GPT-7'. Known cards: 'Echo model', '{BUNDLED_LABEL}'.\n"
        )
    assert openai_server.requests == []


# --- test -------------------------------------------------------------------------------------


def test_test_prints_a_report_of_passed_steps(home: Path, openai_server: OpenAITestServer) -> None:
    echo_card(openai_server)
    code, out, err = cli("test", "Echo model")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == [
        "✓ DNS",
        "✓ Connection",
        "✓ Model list",
        "✓ Chat request",
    ]
    assert lines[4] == "  models on the server: test-model, echo-1"
    ws = open_home()
    try:
        assert catalog.find_card(ws, "Echo model").last_test_ok is True  # type: ignore[union-attr]
    finally:
        ws.close()


def test_test_names_the_failing_layer(home: Path, openai_server: OpenAITestServer) -> None:
    echo_card(openai_server, api_key="sk-wrong-key-for-this-server-0000")
    openai_server.api_key = "sk-the-right-key-1111111111"
    code, out, _ = cli("test", "Echo model")
    assert code == EXIT_FAILED
    lines = out.splitlines()
    assert lines[0].startswith("✓ DNS: ")
    assert lines[-1].startswith("✗ Authentication: The endpoint rejected the API key (401)")
    assert "sk-wrong-key-for-this-server-0000" not in out
    assert cli("models")[1].splitlines()[0].endswith("failing")


# --- keygen, usage errors, the entry point ----------------------------------------------------


def test_keygen_prints_a_valid_fernet_key(home: Path) -> None:
    code, out, err = cli("keygen")
    assert code == 0 and err == ""
    key = out.strip()
    assert out == key + "\n"
    Fernet(key.encode())  # raises if the key is not valid
    assert cli("keygen")[1] != out
    assert not home.exists()  # no workspace was opened for it


def test_bad_arguments_exit_2(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["chat", "only-a-model"], ["fly"], ["chat", "m", "p", "--max-tokens", "x"]):
        with pytest.raises(SystemExit) as caught:
            main(argv, out=StringIO(), err=StringIO())
        assert caught.value.code == 2, argv
    assert "usage: python -m core" in capsys.readouterr().err


def test_a_bad_setting_is_reported_without_traceback(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLUGBOARD_READ_TIMEOUT", "soon")
    code, out, err = cli("models")
    assert code == EXIT_USAGE and out == ""
    assert err == "Error: PLUGBOARD_READ_TIMEOUT must be a number of seconds, got 'soon'\n"


def test_python_dash_m_core_runs(home: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "core", "models"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(BUNDLED_LABEL)
    assert (home / "plugboard.db").is_file() and (home / "secret.key").is_file()
    unknown = subprocess.run(
        [sys.executable, "-m", "core", "chat", "nope", "hi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown.returncode == EXIT_USAGE
    assert "No model card named 'nope'" in unknown.stderr and "Traceback" not in unknown.stderr
