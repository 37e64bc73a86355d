"""Sandbox: chat with streamed replies, settings, errors with Retry, history."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core import catalog, history, templates
from core.catalog import ModelDraft, ProviderDraft
from core.tables import Message as MessageRow
from core.tables import UsageEvent
from tests.app.conftest import App


@pytest.fixture
def echo(ws, openai_server):
    return catalog.add_custom_model(
        ws,
        ProviderDraft(
            name="Echo server", kind="openai_compat", base_url=openai_server.url, auth_type="none"
        ),
        ModelDraft(
            display_name="Echo", remote_model="test-model", default_params={"temperature": 0.2}
        ),
    )


def sandbox_with(app: App, card) -> App:
    app.at.session_state["sandbox.model"] = card.id
    return app.go("sandbox")


def test_first_run_the_bundled_model_answers_offline(app: App):
    app.go("sandbox")
    assert app.selectbox("Model").value is not None
    app.chat("What is the capital of France?")

    replies = [m for m in app.at.chat_message if m.name == "assistant"]
    assert replies and replies[0].markdown[0].value.strip()  # real text from llama.cpp
    assert any("Gemma 3 270M (local) · first token" in c for c in app.texts("caption"))


def test_a_streamed_reply_is_shown_with_its_figures_and_recorded(app, ws, echo, openai_server):
    sandbox_with(app, echo).chat("hello plugboard")

    messages = [(m.name, m.markdown[0].value) for m in app.at.chat_message]
    assert messages == [("user", "hello plugboard"), ("assistant", "Echo: hello plugboard")]
    figures = next(c for c in app.texts("caption") if c.startswith("Echo · "))
    assert "first token" in figures and "total" in figures and "stop" in figures
    assert "→ 3 tokens" in figures  # from the server's usage
    assert app.texts("subheader") == ["hello plugboard"]  # the chat is named after its first prompt
    assert openai_server.requests[-1].json()["stream"] is True
    with ws.session() as s:
        events = s.exec(select(UsageEvent)).all()
    assert [(e.model_name, e.status, e.completion_tokens) for e in events] == [("Echo", "ok", 3)]


def test_system_prompt_and_settings_are_sent(app, echo, openai_server):
    sandbox_with(app, echo)
    app.at.text_area(key="sandbox.system_prompt").input("Answer in French.")
    app.at.slider(key=f"sandbox.params.{echo.id}.temperature").set_value(1.25)
    app.at.number_input(key=f"sandbox.params.{echo.id}.max_tokens").set_value(5)
    app.chat("one two three four five six seven")

    body = openai_server.requests[-1].json()
    assert body["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert body["temperature"] == 1.25 and body["max_tokens"] == 5
    assert any(c.endswith("· length") for c in app.texts("caption"))


def test_an_error_shows_in_the_chat_with_details_and_the_prompt_can_be_retried(
    app, ws, echo, openai_server
):
    openai_server.fault("status", status=401, message="Invalid token for this workspace")
    sandbox_with(app, echo).chat("please answer")

    assert [m.markdown[0].value for m in app.at.chat_message if m.name == "user"] == [
        "please answer"
    ]
    error = app.errors[0]
    assert "Access refused." in error and "rejected the API key (401)" in error
    assert any("HTTP 401" in c for c in app.texts("code"))  # the Details block
    assert "Retry" in [b.label for b in app.at.button]

    app.click("Retry")
    assert not app.errors
    texts = [(m.name, m.markdown[0].value) for m in app.at.chat_message]
    assert texts == [("user", "please answer"), ("assistant", "Echo: please answer")]


def test_a_stream_cut_midway_keeps_the_partial_reply(app, echo, openai_server):
    openai_server.fault("cut", after=2)
    sandbox_with(app, echo).chat("alpha beta gamma delta epsilon")

    assistant = next(m for m in app.at.chat_message if m.name == "assistant")
    assert assistant.markdown[0].value == "Echo: alpha"
    assert "The reply above is partial" in " ".join(app.texts("caption"))
    assert "The reply was cut off." in app.errors[0]


def test_new_chat_history_reopen_and_delete(app, ws, echo):
    sandbox_with(app, echo).chat("first chat")
    first = app.at.session_state["sandbox.conversation_id"]
    app.click("New chat")
    assert app.texts("subheader") == ["New chat"]
    app.chat("second chat")
    assert [c.title for c in history.list_conversations(ws)] == ["second chat", "first chat"]

    app.at.button(key=f"chat_open_{first}").click().run()
    assert app.texts("subheader") == ["first chat"]
    assert "Echo: first chat" in app.everything()

    app.at.button(key=f"chat_delete_{first}").click().run()
    assert "“first chat” and its 2 messages will be deleted." in app.everything()
    app.click("Cancel")
    assert history.get_conversation(ws, first) is not None
    app.at.button(key=f"chat_delete_{first}").click().run()
    app.click("Delete chat")
    assert history.get_conversation(ws, first) is None
    assert app.texts("subheader") == ["New chat"]


def test_model_and_system_prompt_persist_between_pages(app, echo):
    sandbox_with(app, echo)
    app.at.text_area(key="sandbox.system_prompt").input("Be terse.").run()
    app.go("models").go("sandbox")
    assert app.at.text_area(key="sandbox.system_prompt").value == "Be terse."
    assert app.selectbox("Model").value == echo.id


def test_old_turns_are_left_out_when_the_context_is_small(app, ws, openai_server):
    card = catalog.add_custom_model(
        ws,
        ProviderDraft(
            name="Tiny", kind="openai_compat", base_url=openai_server.url, auth_type="none"
        ),
        ModelDraft(
            display_name="Tiny context",
            remote_model="test-model",
            context_length=80,
            default_params={"max_tokens": 10},
        ),
    )
    sandbox_with(app, card)
    for n in range(4):
        app.chat(f"message number {n} " + "padding words " * 8)
    sent = openai_server.requests[-1].json()["messages"]
    assert sent[-1]["content"].startswith("message number 3")
    assert len(sent) < 7  # not all 7 messages of history + the new one
    assert any("older message(s) were left out" in c for c in app.texts("caption"))


def test_no_model_at_all_points_to_manage_providers(app, ws):
    for c in catalog.list_cards(ws):
        catalog.delete_provider(ws, c.provider.id)
    app.go("sandbox")
    assert any("no model to chat with yet" in i for i in app.texts("info"))


def test_a_long_chat_draws_its_newest_messages_and_shows_earlier_ones_on_request(app, ws, echo):
    chat = history.create_conversation(ws, title="long chat")
    for n in range(50):  # 100 messages
        for role, text in (("user", f"question {n}"), ("assistant", f"answer {n}")):
            history.add_message(
                ws,
                chat.id,
                MessageRow(
                    role=role, content=text, turn=n, model_id=echo.id, model_name=echo.display_name
                ),
            )
    app.at.session_state["sandbox.conversation_id"] = chat.id
    sandbox_with(app, echo)

    def drawn() -> list[str]:
        return [m.markdown[0].value for m in app.at.chat_message]

    assert len(drawn()) == 40 and drawn()[0] == "question 30" and drawn()[-1] == "answer 49"
    app.click("Show earlier messages (60 more)")
    assert len(drawn()) == 80 and drawn()[0] == "question 10"
    app.click("Show earlier messages (20 more)")
    assert len(drawn()) == 100 and drawn()[0] == "question 0"
    assert not [b for b in app.at.button if b.label.startswith("Show earlier")]

    app.chat("one more")  # a new turn keeps what was opened and adds to it
    assert drawn()[-2:] == ["one more", "Echo: one more"] and drawn()[0] == "question 0"


def test_a_card_made_from_a_template_offers_its_request_parameters(app, ws, openai_server):
    mine = templates.create_template(
        ws,
        templates.TemplateDefinition(
            name="Narrow gateway",
            kind="openai_compat",
            fixed={"base_url": openai_server.url, "auth_type": "none", "display_name": "{model}"},
            creation_schema={
                "type": "object",
                "required": ["model"],
                "properties": {"model": {"type": "string"}},
            },
            request_schema={
                "type": "object",
                "properties": {"temperature": {"type": "number", "maximum": 1, "default": 0.4}},
            },
        ),
    )
    card = templates.create_model_from_template(ws, mine.id, {"model": "test-model"})
    sandbox_with(app, card)
    assert "Made from the template *Narrow gateway*." in app.texts("caption")
    slider = app.at.slider(key=f"sandbox.params.{card.id}.temperature")
    assert (slider.value, slider.max) == (0.4, 1.0)
    keys = [w.key for w in [*app.at.slider, *app.at.number_input, *app.at.text_input]]
    assert not [k for k in keys if k and k.startswith(f"sandbox.params.{card.id}.top_p")]
    app.chat("within bounds")
    assert openai_server.requests[-1].json()["temperature"] == 0.4
