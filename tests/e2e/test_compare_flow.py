"""Compare three lanes in a real browser: all stream at once, a failing lane stays contained."""

from __future__ import annotations

import json
import time
from pathlib import Path

from playwright.sync_api import Page, expect

from core import catalog, history, votes
from core.catalog import ModelDraft, ProviderDraft
from tests.e2e.conftest import open_page, wait_idle


def add_card(ws, name: str, url: str, model: str) -> int:
    found = catalog.find_card(ws, name)
    if found:
        return found.id
    card = catalog.add_custom_model(
        ws,
        ProviderDraft(
            name=f"{name} connection", kind="openai_compat", base_url=url, auth_type="none"
        ),
        ModelDraft(display_name=name, remote_model=model),
    )
    return card.id


def choose(page: Page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def test_three_lanes_side_by_side(app_page: Page, e2e_server, app_ws, shoot):
    page = app_page
    e2e_server.api_key = None
    e2e_server.reply = " ".join(f"w{i}" for i in range(12))  # 12 chunks, ~1.8 s a lane
    add_card(app_ws, "Lane one", e2e_server.url, "test-model")
    add_card(app_ws, "Lane two", e2e_server.url, "echo-1")
    add_card(app_ws, "Lane down", "http://127.0.0.1:9/v1", "gone")
    open_page(page, "Sandbox")
    page.get_by_role("radio", name="Compare models").click()
    wait_idle(page)
    page.get_by_role("spinbutton", name="Lanes").fill("3")
    page.keyboard.press("Enter")
    wait_idle(page)
    choose(page, "Lane A", "Lane one")
    choose(page, "Lane B", "Lane two")
    choose(page, "Lane C", "Lane down")
    shoot("1-lanes")

    page.get_by_test_id("stChatInput").locator("textarea").fill("compare in the browser")
    page.keyboard.press("Enter")
    # Both good lanes show partial text at the same moment: they stream in parallel.
    both_partial = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not both_partial:
        texts = page.locator("[data-testid='stMarkdownContainer']").all_inner_texts()
        partial = [t for t in texts if t.startswith("w0") and "w11" not in t]
        both_partial = len(partial) >= 2
        page.wait_for_timeout(50)
    assert both_partial
    expect(page.get_by_text("Which reply is better?")).to_be_visible(timeout=30_000)
    wait_idle(page)
    shoot("2-compared")  # the time it takes is measured in bench/compare_lanes.py, not here

    run = history.list_conversations(app_ws)[0]
    assert run.mode == "compare"
    replies = [
        m for m in history.get_conversation(app_ws, run.id).messages if m.role == "assistant"
    ]
    assert sorted((m.lane, m.status) for m in replies) == [(0, "ok"), (1, "ok"), (2, "error")]
    expect(page.get_by_text("Nothing is listening at 127.0.0.1:9", exact=False)).to_be_visible()

    page.get_by_role("radiogroup", name="Which reply is better?").get_by_role(
        "radio", name="B", exact=True
    ).click()
    wait_idle(page)
    assert votes.votes_for(app_ws, run.id).preferences == {0: "B"}
    shoot("3-voted")

    # The export is made when its button is pressed, so it already holds the vote.
    with page.expect_download() as download:
        page.get_by_role("button", name="JSON", exact=True).click()
    assert download.value.suggested_filename == "compare-in-the-browser.json"
    data = json.loads(Path(download.value.path()).read_text())
    (turn,) = data["turns"]
    assert turn["prompt"] == "compare in the browser" and turn["preferred"] == "B"
