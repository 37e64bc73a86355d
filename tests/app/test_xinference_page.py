"""Managing an Xinference server from its connection: register, launch, card, chat, stop."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from core import catalog
from core.catalog import ProviderDraft
from core.inference.xinference import XinferenceServer
from tests.app.conftest import App
from tests.servers.xinference_server import XinferenceTestServer

CUSTOM = {
    "version": 2,
    "model_name": "my-tiny-chat",
    "model_family": "my-tiny-chat",
    "model_lang": ["en"],
    "model_ability": ["chat"],
    "context_length": 4096,
    "model_specs": [
        {
            "model_format": "pytorch",
            "model_size_in_billions": 1,
            "quantization": "none",
            "model_id": "acme/tiny-chat",
            "model_hub": "huggingface",
        }
    ],
    "chat_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
}


@pytest.fixture(scope="module")
def _xi() -> Iterator[XinferenceTestServer]:
    server = XinferenceTestServer(retry_after="0", loading_polls=2).start()
    yield server
    server.stop()


@pytest.fixture
def xi(_xi):
    _xi.reset()
    return _xi


@pytest.fixture
def provider(ws, xi):
    return catalog.create_provider(
        ws, ProviderDraft(name="GPU box", kind="xinference", base_url=xi.url, auth_type="none")
    )


def open_server(app: App, provider) -> App:
    app.go("providers")
    app.at.button(key=f"conn_xi_{provider.id}").click().run()
    app.assert_no_exception()
    return app


def test_register_launch_add_card_chat_terminate_unregister(app, ws, xi, provider):
    open_server(app, provider)
    assert any("No model is running" in i for i in app.texts("info"))

    app.at.text_area(key="xi_reg_json").input(json.dumps(CUSTOM))
    app.click("Register from JSON")
    assert any("Registered my-tiny-chat" in s for s in app.texts("success")), app.errors

    app.at.selectbox(key="xi_launch_name").select("my-tiny-chat")
    app.at.text_input(key="xi_launch_size").input("1")
    app.at.text_input(key="xi_launch_quant").input("none")
    app.click("Launch")
    assert any("is ready" in s for s in app.texts("success")), app.errors
    app.click("Add as model card")
    card = next(c for c in catalog.list_cards(ws) if c.kind == "xinference")
    assert card.remote_model.startswith("my-tiny-chat") and card.context_length == 4096

    app.at.session_state["sandbox.model"] = card.id
    app.go("sandbox").chat("hello xinference")
    reply = next(m for m in app.at.chat_message if m.name == "assistant").markdown[0].value
    assert "hello xinference" in reply

    open_server(app, provider)
    uid = card.remote_model
    app.at.checkbox(key=f"xi_stop_sure_{uid}").check().run()  # Terminate asks first
    app.at.button(key=f"xi_stop_{uid}").click().run()
    assert XinferenceServer(xi.url).running_uids() == []
    app.at.checkbox(key="xi_unreg_sure_my-tiny-chat").check().run()
    app.at.button(key="xi_unreg_my-tiny-chat").click().run()
    assert "my-tiny-chat" not in xi.custom


def test_a_spec_that_breaks_the_servers_rules_is_explained_before_sending(app, xi, provider):
    open_server(app, provider)
    bad = {**CUSTOM, "model_name": "has space", "model_family": ""}
    app.at.text_area(key="xi_reg_json").input(json.dumps(bad))
    app.click("Register from JSON")
    shown = "\n".join(app.errors)
    assert "name" in shown and "family" in shown
    assert xi.custom == {}


def test_the_servers_own_refusal_is_shown_in_its_words(app, xi, provider):
    open_server(app, provider)
    clash = {**CUSTOM, "model_name": "qwen2.5-instruct", "model_family": "qwen2.5-instruct"}
    app.at.text_area(key="xi_reg_json").input(json.dumps(clash))
    app.click("Register from JSON")
    assert any("qwen2.5-instruct" in e for e in app.errors)
