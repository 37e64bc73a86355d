"""core/export.py: any chat or compare run exports to JSON, Markdown and CSV without an
error, the JSON reads back, and no known secret appears in any of the three.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from core import export
from core.history import ConversationView, MessageView
from core.secrets import remember
from core.votes import PREFERENCE_CHOICES, ConversationVotes
from tests.fuzz.strategies import api_keys, budget, known_secrets, odd_text

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
figures = st.one_of(st.none(), st.floats(0, 1e6))
counts = st.one_of(st.none(), st.integers(0, 10**6))


@st.composite
def runs(draw: st.DrawFn) -> tuple[ConversationView, ConversationVotes, list[str]]:
    secrets = draw(st.lists(api_keys, min_size=1, max_size=2))

    def text() -> str:
        """Any text; now and then with a secret pasted into it."""
        parts = draw(st.lists(st.one_of(odd_text, st.sampled_from(secrets)), max_size=3))
        return "".join(parts)

    mode = draw(st.sampled_from(["chat", "compare"]))
    lanes = draw(st.integers(2, 6)) if mode == "compare" else 1
    messages: list[MessageView] = []
    for turn in range(draw(st.integers(0, 3))):
        messages.append(message(len(messages) + 1, "user", text(), 0, turn, draw))
        for lane in range(lanes):
            if draw(st.integers(0, 5)):  # now and then a lane has no reply
                messages.append(message(len(messages) + 1, "assistant", text(), lane, turn, draw))
    lane_specs = [
        {"model_id": draw(st.integers(1, 99)), "system_prompt": text(), "params": draw(params)}
        for _ in range(lanes if mode == "compare" else 0)
    ]
    conversation = ConversationView(
        id=1,
        title=text(),  # the first prompt, as chat.stream_turn makes it
        mode=mode,
        system_prompt=text(),
        params={"lanes": lane_specs, "sync": True} if lane_specs else draw(params),
        created_at=WHEN,
        updated_at=WHEN,
        messages=tuple(messages),
    )
    ids = [m.id for m in messages if m.role == "assistant"]
    votes = ConversationVotes(
        preferences=draw(st.dictionaries(st.integers(0, 3), st.sampled_from(PREFERENCE_CHOICES))),
        ratings=draw(st.dictionaries(st.sampled_from(ids), st.sampled_from(["up", "down"])))
        if ids
        else {},
    )
    return conversation, votes, secrets


params = st.dictionaries(
    st.sampled_from(["temperature", "max_tokens", "stop"]),
    st.one_of(st.floats(0, 2), st.integers(1, 4096), st.lists(st.text(max_size=4), max_size=2)),
    max_size=3,
)


def message(
    id_: int, role: str, content: str, lane: int, turn: int, draw: st.DrawFn
) -> MessageView:
    failed = role == "assistant" and draw(st.booleans())
    return MessageView(
        id=id_,
        role=role,
        content=content,
        lane=lane,
        model_id=draw(st.one_of(st.none(), st.integers(1, 99))),
        model_name=draw(st.sampled_from(["", "Fast", "Slow", "Model · v2"])),
        status="error" if failed else draw(st.sampled_from(["ok", "stopped"])),
        finish_reason=draw(st.one_of(st.none(), st.sampled_from(["stop", "length"]))),
        error_kind="server" if failed else None,
        error_message=draw(odd_text) if failed else None,
        error_detail=None,
        ttft_ms=draw(figures),
        latency_ms=draw(figures),
        prompt_tokens=draw(counts),
        completion_tokens=draw(counts),
        tokens_estimated=draw(st.booleans()),
        params=draw(params),
        created_at=WHEN,
        turn=turn,
    )


def _example_compare_run() -> tuple[ConversationView, ConversationVotes, list[str]]:
    key = "sk-proj-exampleexample1234"
    user = MessageView(
        1, "user", f"use {key}", 0, None, "", "ok", None, None, None, None, None, None, None,
        None, False, {}, WHEN, turn=0,
    )  # fmt: skip
    reply = MessageView(
        2, "assistant", "ok", 0, 5, "Fast", "ok", "stop", None, None, None, 10.0, 20.0, 1, 2,
        False, {}, WHEN, turn=0,
    )  # fmt: skip
    lanes: list[dict[str, Any]] = [
        {"model_id": 5, "system_prompt": "", "params": {"temperature": 0.1}},
        {"model_id": 6, "system_prompt": "", "params": {}},
    ]
    conversation = ConversationView(
        1, f"use {key}", "compare", "", {"lanes": lanes, "sync": True}, WHEN, WHEN,
        messages=(user, reply),
    )  # fmt: skip
    return conversation, ConversationVotes({}, {}), [key]


@budget(120)
@given(runs())
# A compare run's Markdown read lane['model_id'] (KeyError: the lanes carry "model"), and a
# title made from a first prompt with a key in it was exported unscrubbed.
@example(_example_compare_run())
def test_every_run_exports_to_all_formats_without_a_secret(
    run: tuple[ConversationView, ConversationVotes, list[str]],
) -> None:
    conversation, votes, secrets = run
    with known_secrets():
        for secret in secrets:
            remember(secret)
        data = export.build(conversation, votes)
        outputs = {
            "json": export.to_json(data),
            "markdown": export.to_markdown(data),
            "csv": export.to_csv(data),
        }
    assert json.loads(outputs["json"]) == json.loads(json.dumps(data))
    rows = list(csv.DictReader(io.StringIO(outputs["csv"])))
    assert len(rows) == sum(len(t["replies"]) for t in data["turns"])
    for name, text in outputs.items():
        for secret in secrets:
            assert secret not in text, (name, secret)
