"""Manage providers: Add custom model (valid and invalid), Test connection, connections."""

from __future__ import annotations

from core import catalog
from tests.app.conftest import App
from tests.servers.openai_server import OpenAITestServer

KEY = "sk-plugboard-apptest-0123456789abcdef"


def fill_openai_form(
    app: App, url: str, key: str = KEY, model: str = "test-model", name: str = ""
) -> App:
    app.go("providers")
    app.type("Endpoint URL", url).type("API key", key).type("Model name", model)
    if name:
        app.type("Display name", name)
    return app


def test_add_custom_model_creates_a_card_with_the_key_encrypted(
    app, ws, openai_server: OpenAITestServer
):
    fill_openai_form(app, openai_server.url, name="My echo model").click("Add custom model")

    assert "Added “My echo model”." in app.toasts
    assert any("is ready" in s for s in app.texts("success"))
    card = catalog.find_card(ws, "My echo model")
    assert card is not None
    assert card.remote_model == "test-model"
    assert card.provider.base_url == openai_server.url
    assert card.provider.masked_key == "sk-…cdef"
    assert catalog.target_for(ws, card.id).auth.secret == KEY
    # The form is empty again for the next model.
    assert app.text_input("Endpoint URL").value == ""


def test_invalid_form_shows_every_problem_under_its_field_and_keeps_the_input(app, ws):
    app.go("providers")
    app.type("Endpoint URL", "ftp://example.com/v1").click("Add custom model")

    errors = "\n".join(app.errors)
    assert "must start with http:// or https://" in errors
    assert "Enter the API key" in errors
    assert "Enter the model name the server expects" in errors
    assert [c.display_name for c in catalog.list_cards(ws)] == ["Gemma 3 270M (local)"]
    assert app.text_input("Endpoint URL").value == "ftp://example.com/v1"  # nothing typed is lost


def test_duplicate_display_name_is_refused(app, ws, openai_server):
    fill_openai_form(app, openai_server.url, name="gemma 3 270m (LOCAL)").click("Add custom model")

    assert any("already exists" in e for e in app.errors)
    assert len(catalog.list_cards(ws)) == 1


def test_test_connection_reports_success_and_offers_the_servers_models(app, openai_server):
    openai_server.api_key = KEY
    fill_openai_form(app, openai_server.url).click("Test connection")

    shown = app.everything()
    assert "The connection works." in app.texts("success")
    assert "**Model list** — The server lists 2 models." in shown
    assert "'test-model' answered" in shown
    picker = app.selectbox("Model name (from the server's list)")
    assert picker.options == ["test-model", "echo-1"]
    # The key went to the server, and a picked name is what gets saved.
    assert openai_server.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_test_connection_names_the_failing_layer(app, openai_server):
    openai_server.api_key = "sk-the-right-key-000000000000"
    fill_openai_form(app, openai_server.url, key="sk-a-wrong-key-11111111111").click(
        "Test connection"
    )

    assert any("The connection failed at: Authentication" in e for e in app.errors)
    assert "rejected the API key (401)" in app.everything()


def test_test_connection_to_a_server_that_is_down(app):
    fill_openai_form(app, "http://127.0.0.1:9/v1").click("Test connection")

    assert any("Connection: Nothing is listening at 127.0.0.1:9" in e for e in app.errors)


def test_a_tested_connection_marks_the_new_card(app, ws, openai_server):
    fill_openai_form(app, openai_server.url, name="Tested").click("Test connection").click(
        "Add custom model"
    )

    card = catalog.find_card(ws, "Tested")
    assert card is not None and card.last_test_ok is True


def test_second_model_on_an_existing_connection(app, ws, openai_server):
    fill_openai_form(app, openai_server.url, name="First").click("Add custom model")
    provider = catalog.find_card(ws, "First").provider
    app.at.selectbox[0].select(provider.id).run()  # Connection: the existing one
    app.assert_no_exception()
    app.type("Model name", "echo-1").type("Display name", "Second").click("Add custom model")

    second = catalog.find_card(ws, "Second")
    assert second is not None and second.provider.id == provider.id
    assert "Model cards: First, Second" in app.everything()


def test_local_gguf_kind_needs_an_existing_file(app, ws, tmp_path):
    app.go("providers")
    app.at.radio[0].set_value("local_gguf").run()
    app.type("Model file (.gguf)", str(tmp_path / "missing.gguf")).type("Display name", "Nope")
    app.click("Add custom model")

    assert any("There is no file at" in e for e in app.errors)
    assert catalog.find_card(ws, "Nope") is None


def test_delete_connection_asks_first_and_removes_its_cards(app, ws, openai_server):
    fill_openai_form(app, openai_server.url, name="Doomed").click("Add custom model")
    provider = catalog.find_card(ws, "Doomed").provider
    app.at.button(key=f"conn_delete_{provider.id}").click().run()
    assert "Its model cards go too: Doomed." in app.texts("warning")[0]
    app.click("Cancel")
    assert catalog.find_card(ws, "Doomed") is not None

    app.at.button(key=f"conn_delete_{provider.id}").click().run()
    app.click("Delete connection")
    assert catalog.find_card(ws, "Doomed") is None
    assert f"Deleted “{provider.name}”." in app.toasts


def test_bundled_model_can_be_added_again(app, ws):
    bundled = catalog.find_card(ws, "Gemma 3 270M (local)")
    catalog.delete_provider(ws, bundled.provider.id)
    app.go("providers").click("Add the bundled Gemma 3 270M (local) again")

    assert catalog.find_card(ws, "Gemma 3 270M (local)") is not None
