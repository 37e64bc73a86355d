"""Killing `streamlit run app.py` in the middle of a streamed reply, seen in a real browser:
what had arrived is on disk, the next start opens the database cleanly and shows the reply
as cut off, and Retry answers (the process-level checks are in
tests/integration/test_durability.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from core import catalog, history
from core.workspace import Workspace
from tests.conftest import make_settings
from tests.e2e.conftest import open_page, start_app, wait_idle
from tests.integration.core_helpers import add_openai_card, message_rows
from tests.integration.test_durability import (
    CARD,
    CHUNK_DELAY,
    LONG_REPLY,
    WORDS,
    assert_sqlite_intact,
    words,
)
from tests.servers.openai_server import OpenAITestServer


@pytest.fixture(scope="module")
def slow() -> Iterator[OpenAITestServer]:
    server = OpenAITestServer(chunk_delay=CHUNK_DELAY).start()
    server.reply = LONG_REPLY
    yield server
    server.stop()


def test_streamlit_killed_mid_reply_then_started_again(
    page: Page, make_workspace, slow: OpenAITestServer
) -> None:
    setup = make_workspace()
    card = add_openai_card(setup, slow, display_name=CARD)
    for other in catalog.list_cards(setup):  # the slow card is the Sandbox's only (default) one
        if other.id != card.id:
            catalog.delete_provider(setup, other.provider.id)
    setup.close()
    home = setup.settings.home

    app, url = start_app(home)
    try:
        page.goto(url)  # start at / and use the sidebar (a first deep link can flash 404)
        wait_idle(page)
        open_page(page, "Sandbox")
        page.get_by_test_id("stChatInput").locator("textarea").fill("A story, please")
        page.keyboard.press("Enter")
        expect(page.get_by_text("w60", exact=False)).to_be_visible(timeout=30_000)
        os.kill(app.pid, signal.SIGKILL)  # while the browser shows the reply streaming
        app.wait(timeout=30)

        path = home / "plugboard.db"
        assert Path(f"{path}-wal").exists()
        assert_sqlite_intact(path)
        ws = Workspace.open(make_settings(home))
        try:
            prompt, partial = message_rows(ws)
            assert (prompt.role, prompt.content) == ("user", "A story, please")
            assert (partial.role, partial.status) == ("assistant", "streaming")
            saved = words(partial.content)
            assert len(saved) >= 40 and saved == WORDS[: len(saved)]
        finally:
            ws.close()

        # Started again: the chat is there, its reply marked as cut off, and Retry works.
        slow.reply, slow.chunk_delay = None, 0.0
        app, url = start_app(home)
        page.goto(url)
        wait_idle(page)
        open_page(page, "Sandbox")
        page.get_by_test_id("stSidebar").get_by_role("button", name="A story, please").click()
        expect(page.get_by_text("The reply was cut off.", exact=False)).to_be_visible(
            timeout=30_000
        )
        expect(page.get_by_text(history.INTERRUPTED_MESSAGE[:40], exact=False)).to_be_visible()
        expect(page.get_by_text(f"w{len(saved) - 1}", exact=False).first).to_be_visible()
        page.get_by_role("button", name="Retry").click()
        expect(page.get_by_text("Echo: A story, please")).to_be_visible(timeout=30_000)
    finally:
        app.kill()
        app.wait(timeout=30)
