"""Compare mode: three lanes (one slow, one failing) on one prompt, votes, reopen, export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest

from core import catalog, history, votes
from core.catalog import ModelDraft, ProviderDraft
from tests.app.conftest import App
from tests.servers.openai_server import OpenAITestServer

SECRET = "sk-compare-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def _slow_server() -> Iterator[OpenAITestServer]:
    server = OpenAITestServer(chunk_delay=0.1).start()
    yield server
    server.stop()


@pytest.fixture
def cards(ws, openai_server, _slow_server):
    _slow_server.reset()

    def add(name: str, url: str, model: str, key: str | None = None):
        return catalog.add_custom_model(
            ws,
            ProviderDraft(
                name=f"{name} server",
                kind="openai_compat",
                base_url=url,
                auth_type="bearer" if key else "none",
                api_key=key,
            ),
            ModelDraft(display_name=name, remote_model=model),
        )

    return [
        add("Fast", openai_server.url, "test-model", SECRET),
        add("Slow", _slow_server.url, "echo-1"),
        add("Broken", openai_server.url, "no-such-model"),  # the server answers 404
    ]


def compare_with(app: App, cards) -> App:
    app.go("sandbox")
    app.at.segmented_control(key="sandbox.mode").set_value("Compare").run()
    app.at.number_input(key="cmp.lanes").set_value(len(cards)).run()
    for i, card in enumerate(cards):
        app.at.selectbox(key=f"cmp.lane{i}.model").select(card.id)
    return app.run()


def lane_texts(app: App) -> list[str]:
    return [m.value for m in app.at.markdown]


def test_three_lanes_stream_one_prompt_and_a_failing_lane_does_not_disturb_the_others(
    app, ws, cards, openai_server
):
    compare_with(app, cards)
    app.at.chat_input(key="compare.input").set_value("compare these words").run(timeout=60)
    app.assert_no_exception()

    run_id = app.at.session_state["sandbox.compare_id"]
    run = history.get_conversation(ws, run_id)
    assert run.mode == "compare" and run.title == "compare these words"
    replies = {m.lane: m for m in run.messages if m.role == "assistant"}
    assert replies[0].content == "Echo: compare these words" and replies[0].status == "ok"
    assert replies[1].content == "Echo: compare these words" and replies[1].status == "ok"
    assert replies[2].status == "error" and replies[2].error_kind == "not_found"
    shown = app.everything()
    assert "**A** · Fast" in shown and "**B** · Slow" in shown and "**C** · Broken" in shown
    assert any("does not exist" in e for e in app.errors)
    # The fast lane is marked fastest; both good lanes show their figures.
    assert ":green-badge[:material/bolt: fastest]" in shown
    assert sum(1 for c in app.texts("caption") if "first token" in c) == 3


def test_lanes_can_have_their_own_system_prompt_and_settings(app, ws, cards, openai_server):
    fast = cards[0]
    compare_with(app, [fast, fast])
    app.at.toggle(key="cmp.sync").set_value(False).run()
    app.at.text_area(key="cmp.lane0.system").input("Answer as a pirate.")
    app.at.text_area(key="cmp.lane1.system").input("Answer as a poet.")
    app.at.slider(key="cmp.lane1.temperature").set_value(1.5)
    app.run()
    app.at.chat_input(key="compare.input").set_value("hello").run(timeout=60)

    bodies = sorted(
        (r.json() for r in openai_server.requests if r.path.endswith("/chat/completions")),
        key=lambda b: b["messages"][0]["content"],
    )
    assert [b["messages"][0]["content"] for b in bodies] == [
        "Answer as a pirate.",
        "Answer as a poet.",
    ]
    assert bodies[1]["temperature"] == 1.5


def test_votes_are_stored(app, ws, cards):
    compare_with(app, cards[:2])
    app.at.chat_input(key="compare.input").set_value("vote on this").run(timeout=60)
    run_id = app.at.session_state["sandbox.compare_id"]
    app.at.segmented_control(key=f"prefer_{run_id}_0").set_value("B").run()
    first_reply = next(
        m for m in history.get_conversation(ws, run_id).messages if m.role == "assistant"
    )
    app.at.feedback(key=f"rate_{first_reply.id}").set_value(0).run()

    cast = votes.votes_for(ws, run_id)
    assert cast.preferences == {0: "B"}
    assert cast.ratings == {first_reply.id: "down"}


def test_reopen_continue_and_each_lane_keeps_its_history(app, ws, cards, openai_server):
    compare_with(app, cards[:2])
    app.at.chat_input(key="compare.input").set_value("first question").run(timeout=60)
    run_id = app.at.session_state["sandbox.compare_id"]
    app.click("New comparison")
    assert app.at.session_state["sandbox.compare_id"] is None

    app.at.button(key=f"chat_open_{run_id}").click().run()
    assert app.texts("subheader")[0] == "first question"
    assert "Echo: first question" in app.everything()
    openai_server.requests.clear()
    app.at.chat_input(key="compare.input").set_value("second question").run(timeout=60)

    run = history.get_conversation(ws, run_id)
    assert [m.turn for m in run.messages if m.role == "user"] == [0, 0, 1, 1]
    sent = openai_server.requests[-1].json()["messages"]
    assert [m["content"] for m in sent] == [
        "first question",
        "Echo: first question",
        "second question",
    ]


def test_export_contains_prompts_replies_figures_votes_and_no_secret(app, ws, cards):
    compare_with(app, cards)
    app.at.chat_input(key="compare.input").set_value("export me").run(timeout=60)
    run_id = app.at.session_state["sandbox.compare_id"]
    votes.set_preference(ws, run_id, 0, "A")

    app.run()
    downloads = {b.label: b for b in app.at.download_button}
    assert set(downloads) == {"Markdown", "JSON", "CSV"}
    from core import export

    data = export.conversation_data(ws, run_id)
    assert data["turns"][0]["prompt"] == "export me" and data["turns"][0]["preferred"] == "A"
    fast = data["turns"][0]["replies"][0]
    assert (
        fast["model"] == "Fast"
        and fast["text"] == "Echo: export me"
        and fast["figures"]["latency_ms"] > 0
    )
    rows = list(csv.DictReader(io.StringIO(export.to_csv(data))))
    assert [r["lane"] for r in rows] == ["A", "B", "C"] and rows[2]["status"] == "error"
    markdown = export.to_markdown(data)
    assert "## Turn 1" in markdown and "**Preferred:** A" in markdown and "### A · Fast" in markdown
    for text in (export.to_json(data), markdown, export.to_csv(data)):
        assert SECRET not in text
    assert json.loads(export.to_json(data))["mode"] == "compare"


def test_focus_view_shows_one_lane_and_comes_back(app, ws, cards):
    compare_with(app, cards[:2])
    app.at.chat_input(key="compare.input").set_value("focus").run(timeout=60)
    app.at.button(key="focus_1").click().run()
    shown = app.everything()
    assert "**B** · Slow" in shown and "**A** · Fast" not in shown
    app.at.button(key="unfocus_1").click().run()
    assert "**A** · Fast" in app.everything()
