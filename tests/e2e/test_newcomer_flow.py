"""A newcomer, in a real browser: add an OpenAI-compatible model, try it, edit it, delete it."""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect

from core import catalog, history
from tests.e2e.conftest import open_page, wait_idle

KEY = "sk-e2e-newcomer-0123456789abcdef"


def card_menu(page: Page, card_id: int, option: str) -> None:
    page.locator(f".st-key-card_menu_{card_id}").get_by_test_id("stMenuButtonButton").first.click()
    page.get_by_role("menuitem", name=option).click()
    wait_idle(page)


def assistant_texts(page: Page) -> list[str]:
    return (
        page.get_by_test_id("stChatMessage")
        .filter(has=page.get_by_test_id("stChatMessageAvatarAssistant"))
        .all_inner_texts()
    )


def test_add_try_edit_delete(app_page: Page, e2e_server, app_ws, shoot):
    page = app_page
    e2e_server.api_key = KEY
    expect(page.get_by_text("Gemma 3 270M (local)", exact=True)).to_be_visible()
    shoot("1-models-first-run")

    open_page(page, "Manage providers")
    page.get_by_role("textbox", name="Endpoint URL").fill(e2e_server.url)
    page.get_by_role("textbox", name="API key").fill(KEY)
    page.get_by_role("textbox", name="Model name").fill("test-model")
    page.get_by_role("textbox", name="Display name").fill("My first model")
    page.get_by_role("button", name="Test connection").click()
    wait_idle(page)
    expect(page.get_by_text("The connection works.")).to_be_visible()
    shoot("2-providers-tested")
    page.get_by_role("button", name="Add custom model").click()
    wait_idle(page)
    expect(page.get_by_text("“My first model” is ready.")).to_be_visible()
    shoot("3-providers-added")
    card = catalog.find_card(app_ws, "My first model")
    assert card is not None and card.provider.masked_key == "sk-…cdef"

    # Try in Sandbox: the answer streams in, word by word.
    page.get_by_role("button", name="Try in Sandbox").click()
    wait_idle(page)
    page.get_by_test_id("stChatInput").locator("textarea").fill(
        "tell me about streaming replies please"
    )
    page.keyboard.press("Enter")
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        texts = assistant_texts(page)
        if texts and texts[-1] not in seen:
            seen.append(texts[-1])
        if texts and "please" in texts[-1]:
            break
        page.wait_for_timeout(50)
    wait_idle(page)
    assert any("Echo: tell me about streaming replies please" in t for t in assistant_texts(page))
    assert any("Echo:" in t and "please" not in t for t in seen), seen  # a partial reply
    expect(page.get_by_text("first token", exact=False)).to_be_visible()
    shoot("4-sandbox-reply")

    # Edit from the card's ⋮ menu.
    open_page(page, "Models")
    shoot("5-models-with-card")
    card_menu(page, card.id, "Edit")
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("textbox", name="Display name").fill("My renamed model")
    shoot("6-edit-dialog")
    dialog.get_by_role("button", name="Save custom model").click()
    wait_idle(page)
    expect(page.get_by_text("My renamed model", exact=True)).to_be_visible()
    assert catalog.get_card(app_ws, card.id).display_name == "My renamed model"

    # Delete, confirmed in its dialog.
    card_menu(page, card.id, "Delete")
    shoot("7-delete-dialog")
    page.get_by_role("button", name="Delete custom model").click()
    wait_idle(page)
    expect(page.get_by_text("My renamed model", exact=True)).to_have_count(0)
    assert catalog.find_card(app_ws, "My renamed model") is None
    shoot("8-models-after-delete")


def test_stop_ends_the_stream_and_keeps_the_partial_reply(
    app_page: Page, e2e_server, app_ws, shoot
):
    page = app_page
    card = catalog.find_card(app_ws, "Slow echo")
    if card is None:
        from core.catalog import ModelDraft, ProviderDraft

        card = catalog.add_custom_model(
            app_ws,
            ProviderDraft(
                name="Slow server", kind="openai_compat", base_url=e2e_server.url, auth_type="none"
            ),
            ModelDraft(display_name="Slow echo", remote_model="test-model"),
        )
    e2e_server.api_key = None
    e2e_server.reply = " ".join(f"word{i}" for i in range(60))  # 60 chunks, ~9 s
    open_page(page, "Models")
    card_menu(page, card.id, "Try in Sandbox")
    wait_idle(page)
    page.get_by_test_id("stChatInput").locator("textarea").fill("a long answer please")
    page.keyboard.press("Enter")
    expect(page.get_by_text("word3", exact=False)).to_be_visible(timeout=20_000)
    page.get_by_test_id("stChatInputStopButton").click()  # the send button became Stop
    wait_idle(page)
    shoot("stopped")
    time.sleep(0.5)
    assert e2e_server.disconnects >= 1  # the HTTP stream was closed
    chats = history.list_conversations(app_ws)
    reply = history.get_conversation(app_ws, chats[0].id).messages[-1]
    assert reply.status == "stopped"
    assert reply.content.startswith("word0 word1") and "word59" not in reply.content
