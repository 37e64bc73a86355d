"""Models: the card grid and its ⋮ menu (View details, Try in Sandbox, Edit, Delete)."""

from __future__ import annotations

import pytest

from core import catalog
from core.catalog import ModelDraft, ProviderDraft
from tests.app.conftest import App

KEY = "sk-plugboard-models-0123456789abcd"


@pytest.fixture
def card(ws, openai_server):
    return catalog.add_custom_model(
        ws,
        ProviderDraft(
            name="Echo server", kind="openai_compat", base_url=openai_server.url, api_key=KEY
        ),
        ModelDraft(
            display_name="Echo",
            remote_model="test-model",
            tags=["test", "fast"],
            context_length=4096,
            default_params={"temperature": 0.3, "max_tokens": 64},
        ),
    )


def test_first_run_shows_the_bundled_local_model(app: App):
    assert "**Gemma 3 270M (local)**" in app.everything()
    assert "Local GGUF file · `gemma-3-270m` · Local models" in app.texts("caption")


def test_grid_shows_kind_model_provider_tags_and_status(app, card):
    app.run()
    shown = app.everything()
    assert ":gray[○] **Echo**" in shown
    assert "OpenAI-compatible · `test-model` · Echo server" in shown
    assert ":blue-badge[test] :blue-badge[fast]" in shown
    assert "2 of 2 models" in shown


def test_search_kind_and_tag_filters(app, card):
    app.run()
    app.type("Search", "echo").run()
    assert "1 of 2 models" in app.everything()
    app.type("Search", "").run()
    app.selectbox("Tag").select("fast").run()
    assert "**Echo**" in app.everything() and "Gemma" not in app.everything()
    app.selectbox("Tag").select(None).run()
    app.selectbox("Kind").select("local_gguf").run()
    assert "**Gemma 3 270M (local)**" in app.everything() and "**Echo**" not in app.everything()
    app.selectbox("Kind").select(None).run()
    app.type("Search", "no such model").run()
    assert any("No model matches these filters" in i for i in app.texts("info"))


def test_empty_catalog_points_to_manage_providers(app, ws):
    for c in catalog.list_cards(ws):
        catalog.delete_provider(ws, c.provider.id)
    app.run()
    assert any("No models yet" in i for i in app.texts("info"))


def test_view_details_shows_settings_masked_key_and_usage(app, card, ws):
    app.run().menu(card.id, "View details")
    shown = app.everything()
    assert "Echo" in app.texts("subheader")
    assert "- API key: `sk-…abcd`" in shown
    assert KEY not in shown
    assert f"`{card.provider.base_url}`" in shown
    assert "Default settings: temperature = 0.3, max_tokens = 64" in shown
    assert "Context length: 4096" in shown
    assert "No requests yet. Try it in the Sandbox." in shown


def test_details_test_connection_updates_the_status_dot(app, card, ws):
    app.run().menu(card.id, "View details").click("Test connection")
    assert "The connection works." in app.texts("success")
    assert catalog.get_card(ws, card.id).last_test_ok is True


def test_edit_saves_changes_and_a_blank_key_keeps_the_stored_one(app, card, ws):
    app.run().menu(card.id, "Edit")
    assert app.text_input("API key").value == ""  # the key is never sent back to the browser
    app.type("Display name", "Echo renamed").type("Model name", "echo-1")
    app.click("Save custom model")

    saved = catalog.get_card(ws, card.id)
    assert (saved.display_name, saved.remote_model) == ("Echo renamed", "echo-1")
    assert catalog.target_for(ws, card.id).auth.secret == KEY
    assert "Saved “Echo renamed”." in app.toasts


def test_edit_with_problems_says_what_is_wrong_and_saves_nothing(app, card, ws):
    app.run().menu(card.id, "Edit")
    app.type("Endpoint URL", "localhost:8080/v1").type("Display name", "Gemma 3 270M (local)")
    app.click("Save custom model")

    errors = "\n".join(app.errors)
    assert "must start with http:// or https://" in errors
    assert "already exists" in errors
    assert catalog.get_card(ws, card.id).display_name == "Echo"
    assert app.text_input("Endpoint URL").value == "localhost:8080/v1"


def test_delete_needs_confirmation(app, card, ws):
    app.run().menu(card.id, "Delete")
    assert "Delete custom model" in [b.label for b in app.at.button]
    app.click("Cancel")
    assert catalog.get_card(ws, card.id)

    app.menu(card.id, "Delete").click("Delete custom model")
    with pytest.raises(catalog.NotFoundInCatalog):
        catalog.get_card(ws, card.id)
    assert "Deleted “Echo”." in app.toasts
    assert "**Echo**" not in app.everything()


def test_delete_can_keep_the_connection(app, card, ws):
    app.run().menu(card.id, "Delete")
    app.at.checkbox(key="delete_connection_too").uncheck()
    app.click("Delete custom model")
    assert [p.name for p in catalog.list_providers(ws)] == ["Echo server", "Local models"]


def test_try_in_sandbox_opens_the_sandbox_with_that_model(app, card):
    app.run().menu(card.id, "Try in Sandbox")
    assert app.at.session_state["sandbox.model"] == card.id
    assert app.selectbox("Model").value == card.id
    assert "Chatting with **Echo**. Type below to start." in app.everything()


def test_a_big_catalog_is_paged_and_new_filters_start_at_page_one(app, ws, card):
    for n in range(1, 14):  # with Echo and the bundled model: 15 cards
        catalog.create_model(
            ws, card.provider.id, ModelDraft(display_name=f"Echo {n:02d}", remote_model="m")
        )

    def names() -> list[str]:
        return [t for t in app.texts("markdown") if "**Echo" in t or "**Gemma" in t]

    app.run()
    assert len(names()) == 12 and "Page 1 of 2 · cards 1–12 of 15" in app.texts("caption")
    assert app.button("Previous").disabled
    app.click("Next")
    assert len(names()) == 3 and "Page 2 of 2 · cards 13–15 of 15" in app.texts("caption")
    assert app.button("Next").disabled
    app.go("sandbox").go("models")  # the page is kept while the list is the same
    assert "Page 2 of 2 · cards 13–15 of 15" in app.texts("caption")

    app.type("Search", "echo 1").run()  # Echo 10–13
    assert len(names()) == 4
    assert not [b for b in app.at.button if b.label in ("Previous", "Next")]
    app.type("Search", "").run()
    assert "Page 1 of 2 · cards 1–12 of 15" in app.texts("caption")
