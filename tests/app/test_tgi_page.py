"""TGI in the browser flow: add a TGI model, chat with streaming, TGI's rules, token details."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core import catalog
from core.catalog import ModelDraft, ProviderDraft
from tests.app.conftest import App
from tests.servers.tgi_server import TGITestServer


@pytest.fixture(scope="module")
def _tgi() -> Iterator[TGITestServer]:
    server = TGITestServer().start()
    yield server
    server.stop()


@pytest.fixture
def tgi(_tgi: TGITestServer) -> TGITestServer:
    _tgi.reset()
    return _tgi


@pytest.fixture
def card(ws, tgi):
    return catalog.add_custom_model(
        ws,
        ProviderDraft(
            name="TGI box",
            kind="tgi",
            base_url=tgi.url,
            auth_type="none",
            settings={"chat_template": "chatml"},
        ),
        ModelDraft(
            display_name="Llama on TGI", context_length=2048, default_params={"max_tokens": 40}
        ),
    )


def sandbox(app: App, card) -> App:
    app.at.session_state["sandbox.model"] = card.id
    return app.go("sandbox")


def test_add_a_tgi_model_with_its_template_and_context_from_info(app, ws, tgi):
    app.go("providers")
    app.at.radio[0].set_value("tgi").run()
    app.type("Endpoint URL", tgi.url).type("Display name", "My TGI")
    app.selectbox("Authentication").select("none")  # a form: sent with the button press
    app.selectbox("Chat template").select("llama3")
    app.click("Test connection")
    assert (
        "Server info" in app.everything()
        and "serving meta-llama/Llama-3.1-8B-Instruct" in app.everything()
    )
    app.click("Add custom model")

    card = catalog.find_card(ws, "My TGI")
    assert card is not None and card.kind == "tgi"
    assert card.context_length == 2048  # max_total_tokens from /info
    assert card.provider.settings["chat_template"] == "llama3"
    assert card.last_test_ok is True


def test_chat_streams_from_generate_stream_with_the_template(app, card, tgi):
    sandbox(app, card).chat("What is deep learning?")

    reply = next(m for m in app.at.chat_message if m.name == "assistant").markdown[0].value
    assert reply.startswith("Deep learning is a kind of machine learning")
    sent = tgi.requests[-1]
    assert sent.path == "/generate_stream"
    body = sent.json()
    assert body["inputs"].endswith(
        "<|im_start|>user\nWhat is deep learning?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert body["parameters"]["max_new_tokens"] == 40
    assert "<|im_end|>" in body["parameters"]["stop"]


def test_a_rule_of_tgi_is_explained_before_sending(app, card, tgi):
    sandbox(app, card)
    app.at.number_input(key=f"sandbox.params.{card.id}.best_of").set_value(2)
    app.chat("Two candidates please")

    assert "Best of above 1 cannot be streamed: turn off Stream the reply." in app.errors[0]
    assert tgi.requests == []  # nothing was sent


def test_a_parameter_tgi_rejects_shows_its_message(app, card, tgi):
    sandbox(app, card)
    app.at.number_input(key=f"sandbox.params.{card.id}.top_p").set_value(1.0)
    app.chat("hello")

    assert "Top P must be > 0 and < 1 (got 1)." in app.errors[0]


def test_details_show_tokens_seed_and_best_of_candidates(app, card, tgi):
    sandbox(app, card)
    prefix = f"sandbox.params.{card.id}"
    app.at.toggle(key=f"{prefix}.details").set_value(True)
    app.at.toggle(key=f"{prefix}.stream").set_value(False)
    app.at.toggle(key=f"{prefix}.do_sample").set_value(True)
    app.at.number_input(key=f"{prefix}.best_of").set_value(2)
    app.chat("Explain briefly")

    assert not app.errors
    body = tgi.requests[-1].json()
    assert tgi.requests[-1].path == "/generate" and body["parameters"]["best_of"] == 2
    shown = app.everything()
    assert "finish reason: eos_token" in shown and "16 tokens generated" in shown
    assert "Candidate 2" in shown
    html = app.at.get("html")[0].proto.body
    assert "background:#fecaca" in html  # the unlikely tokens are highlighted
    assert "logprob -3.500" in html
