"""How a failing reply looks in the Sandbox, for a few faults of each connection kind.

The fault matrix (tests/integration/test_fault_matrix.py) checks every kind × fault in core;
here the real app draws a few of them: the prompt stays on screen, the reply shows one error
titled by its kind with the plain-words message, a Details block with what an engineer needs,
a partial reply is kept and marked, Retry is offered, and no exception element appears.
Retries are off in these workspaces (PLUGBOARD_MAX_RETRIES=0): the matrix counts them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core import catalog
from core.catalog import ModelDraft, ProviderDraft
from core.history import get_conversation
from tests.app.conftest import App
from tests.integration.test_fault_matrix import (
    KINDS,
    LOCAL_EXPECT,
    PROMPT,
    Broken,
    Rig,
    expected,
    running_rigs,
)
from ui.transcript import ERROR_TITLES

DISPLAYED = [  # (kind, fault) of the matrix; xinference only when the kind is there
    ("openai_compat", "cut"),  # a partial reply, kept and marked
    ("openai_compat", "http_429"),
    ("tgi", "error_event"),  # TGI's error event after some tokens
    ("tgi", "http_401"),  # TGI answers 401 with an empty body
    ("custom_openai", "error_event"),  # a 200 whose JSON is an error
    ("custom_openai", "wrong_shape"),
    ("custom_passthrough", "http_4xx"),  # FastAPI's 422 detail list
    ("custom_passthrough", "refused"),
    ("xinference", "http_404"),  # a UID that is not running: the running ones are named
    ("xinference", "error_event"),
]


@pytest.fixture(scope="module")
def rigs() -> Iterator[dict[str, Rig]]:
    with running_rigs() as running:
        yield running


@pytest.fixture(autouse=True)
def _no_retries(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUGBOARD_MAX_RETRIES", "0")


def sandbox_with(app: App, card_id: int) -> App:
    app.at.session_state["sandbox.model"] = card_id
    return app.go("sandbox")


def assert_shown_as_an_error(app: App, ws, kind: str, partial: bool) -> None:
    conversation = get_conversation(ws, app.at.session_state["sandbox.conversation_id"])
    assert conversation is not None
    user, reply = conversation.messages
    assert (user.content, reply.status, reply.error_kind) == (PROMPT, "error", kind)

    # The prompt stays; the reply is one error, titled by its kind, with the saved message.
    bubbles = [(m.name, m.markdown[0].value if m.markdown else "") for m in app.at.chat_message]
    assert bubbles[0] == ("user", PROMPT)
    assert [name for name, _ in bubbles] == ["user", "assistant"]
    assert app.errors == [f"**{ERROR_TITLES[kind]}.** {reply.error_message}"]
    # Details: what an engineer needs, in a block of its own.
    details = [e for e in app.at.expander if e.label == "Details"]
    assert len(details) == 1
    assert [c.value.strip() for c in details[0].code] == [reply.error_detail.strip()]
    captions = " ".join(app.texts("caption"))
    if partial:
        assert reply.content and bubbles[1][1] == reply.content
        assert "The reply above is partial" in captions
    else:
        assert reply.content == ""
    assert "Retry" in [b.label for b in app.at.button]
    assert not app.at.exception
    for word in ("Traceback", "KeyError", "NoneType"):
        assert word not in app.everything()


@pytest.mark.parametrize(
    ("kind", "fault"), [pytest.param(*c, id="-".join(c)) for c in DISPLAYED if c[0] in KINDS]
)
def test_a_failing_reply_shows_as_an_error_with_details(
    app: App, ws, rigs: dict[str, Rig], kind: str, fault: str
) -> None:
    rig = rigs[kind]
    rig.reset()
    card = catalog.add_custom_model(ws, rig.provider(f"{kind} server"), rig.model(kind))
    broken = Broken(ws, card, rig, fault)
    try:
        sandbox_with(app, card.id).chat(PROMPT)  # App.run fails on any exception element
        expect = expected(kind, fault)
        assert_shown_as_an_error(app, ws, expect.kind, expect.partial)

        # The fault goes away: Retry gives the whole reply.
        broken.heal()
        app.click("Retry")
        assert not app.errors
        bubbles = [(m.name, m.markdown[0].value) for m in app.at.chat_message]
        assert bubbles == [("user", PROMPT), ("assistant", rig.reply)]
    finally:
        broken.close()


def test_a_corrupt_local_model_file_shows_as_an_error_with_details(
    app: App, ws, bundled_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "broken.gguf"
    with bundled_model.open("rb") as model:
        path.write_bytes(model.read(2_000_000))  # the head of a real GGUF, nothing more
    card = catalog.add_custom_model(
        ws,
        ProviderDraft(name="Local file", kind="local_gguf", base_url=str(path), auth_type="none"),
        ModelDraft(display_name="Local model", context_length=2048),
    )
    sandbox_with(app, card.id).chat(PROMPT)
    expect = LOCAL_EXPECT["corrupt_file"]
    assert_shown_as_an_error(app, ws, expect.kind, partial=False)
    assert "Is it a valid GGUF model file?" in app.errors[0]
