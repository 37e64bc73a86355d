"""Custom API (JSONata) in the browser flow: presets, preview, test exchange, guardrail, N."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from core import catalog
from core.catalog import ModelDraft, ProviderDraft
from tests.app.conftest import App
from tests.servers.custom_api_server import CustomAPITestServer


@pytest.fixture(scope="module")
def _api() -> Iterator[CustomAPITestServer]:
    server = CustomAPITestServer().start()
    yield server
    server.stop()


@pytest.fixture
def api(_api: CustomAPITestServer) -> CustomAPITestServer:
    _api.reset()
    return _api


def custom_form(app: App) -> App:
    app.go("providers")
    app.at.radio[0].set_value("custom_api").run()
    app.assert_no_exception()
    return app


def test_preset_fills_the_expressions_and_the_preview_masks_the_key(app, ws, api):
    custom_form(app)
    app.selectbox("Start from a preset").select("openai_chat").run()
    request = app.at.text_area(key="add.0.custom_api.request_expression").value
    assert "$reduce(messages, $append)" in request and "$model" in request
    assert (
        app.at.text_area(key="add.0.custom_api.response_expression").value
        == "[choices.message.content]"
    )

    app.type("Endpoint URL", f"{api.url}/v1/chat/completions").type("API key", api.token)
    app.type("Model name (optional)", "mistralai/Mistral-7B-Instruct-v0.3").type(
        "Display name", "Together-like"
    )
    app.click("Test connection")

    shown = app.everything()
    assert "The connection works." in app.texts("success")
    json_views = [json.loads(j.value) for j in app.at.json]  # AppTest gives the JSON text
    sent, received, transformed, headers, body = json_views  # test exchange, then preview
    assert sent["model"] == "mistralai/Mistral-7B-Instruct-v0.3"
    assert received["object"] == "chat.completion" and transformed == ["Echo: Say hi."]
    assert headers["Authorization"] == "Bearer tok…cdef"
    assert body["model"] == "mistralai/Mistral-7B-Instruct-v0.3"
    assert body["messages"][-1] == {"role": "user", "content": "What is machine learning?"}
    assert api.token not in shown and all(api.token not in str(v) for v in json_views)
    app.click("Add custom model")
    card = catalog.find_card(ws, "Together-like")
    assert card.provider.settings["preset"] == "openai_chat"
    assert card.last_test_ok is True


def test_a_syntax_error_is_shown_at_save_time_with_its_position(app, ws, api):
    custom_form(app)
    app.type("Endpoint URL", f"{api.url}/echo-batch").type("Display name", "Broken expression")
    app.selectbox("Authentication").select("none")
    app.at.text_area(key="add.0.custom_api.request_expression").input('{"messages": messages,')
    app.click("Add custom model")

    assert any("line 1" in e and "column" in e for e in app.errors), app.errors
    assert catalog.find_card(ws, "Broken expression") is None


def card_for(ws, api, name: str, path: str, **settings):
    return catalog.add_custom_model(
        ws,
        ProviderDraft(
            name=name,
            kind="custom_api",
            base_url=f"{api.url}{path}",
            auth_type="none",
            settings={"response_type": "string", "multi_turn": True, **settings},
        ),
        ModelDraft(display_name=name),
    )


def sandbox(app: App, card) -> App:
    app.at.session_state["sandbox.model"] = card.id
    return app.go("sandbox")


def test_guardrail_model_shows_a_pass_or_flag_badge(app, ws, api):
    card = card_for(ws, api, "Guard", "/guardrail", response_type="boolean", multi_turn=False)
    sandbox(app, card).chat("how do I plan an attack on the castle?")
    assert "Guardrail verdict: :red-badge[:material/flag: flagged]" in app.everything()
    app.chat("what is the weather like?")
    assert "Guardrail verdict: :green-badge[:material/check: passed]" in app.everything()


def test_n_replies_are_shown_side_by_side(app, ws, api):
    card = card_for(ws, api, "Multi", "/echo-batch")
    sandbox(app, card)
    app.at.number_input(key=f"sandbox.params.{card.id}.n").set_value(3)
    app.chat("three please")
    shown = app.everything()
    assert "Reply 1 of 3" in shown and "Reply 3 of 3" in shown
    assert "Reply 2 to: three please" in shown


def test_single_turn_model_says_only_the_last_message_is_sent(app, ws, api):
    card = card_for(ws, api, "One at a time", "/echo-batch", multi_turn=False)
    sandbox(app, card)
    assert any("only" in c and "last" in c for c in app.texts("caption"))
    app.at.text_area(key="sandbox.system_prompt").input("ignored")
    app.chat("first").chat("second")
    sent = api.requests_to("/echo-batch")[-1].json()
    assert sent["messages"] == [[{"role": "user", "content": "second"}]]
