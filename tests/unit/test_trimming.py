"""core.chat.fit_to_context and usable_history: what part of a conversation is sent again."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import Any

from core.chat import MESSAGE_OVERHEAD, estimate_tokens, fit_to_context, usable_history
from core.history import MessageView
from core.inference.types import Message

_ids = count(1)


def chars(text: str) -> int:
    """A counter that is easy to reason about: one token per character."""
    return len(text)


def turn(n: int, size: int = 10) -> list[Message]:
    return [Message("user", f"{n}" * size), Message("assistant", chr(ord("a") + n) * size)]


def view(role: str, content: str, *, status: str = "ok", lane: int = 0) -> MessageView:
    fields: dict[str, Any] = dict.fromkeys(
        (
            "model_id",
            "finish_reason",
            "error_kind",
            "error_message",
            "error_detail",
            "ttft_ms",
            "latency_ms",
            "prompt_tokens",
            "completion_tokens",
        )
    )
    return MessageView(
        id=next(_ids),
        role=role,
        content=content,
        lane=lane,
        model_name="m",
        status=status,
        tokens_estimated=False,
        params={},
        created_at=datetime.now(UTC),
        **fields,
    )


# --- fit_to_context ---------------------------------------------------------------------------


def test_everything_fits() -> None:
    system, new = Message("system", "S" * 10), Message("user", "N" * 10)
    past = turn(1) + turn(2)
    sent, dropped = fit_to_context(system, past, new, context_length=1000, reserve=100, count=chars)
    assert sent == [system, *past, new]
    assert dropped == 0


def test_keeps_the_system_prompt_and_the_newest_turns() -> None:
    system, new = Message("system", "S" * 10), Message("user", "N" * 10)
    past = turn(1) + turn(2) + turn(3)  # 6 messages of 10 + 4 tokens each
    # Budget: 120 - 20 reserve - 2 x 14 fixed = 72 -> the newest 5 messages (70) would fit,
    # but history must start with a user message, so the newest 2 turns (4 messages) are kept.
    sent, dropped = fit_to_context(system, past, new, context_length=120, reserve=20, count=chars)
    assert sent == [system, *turn(2), *turn(3), new]
    assert dropped == 2


def test_history_never_starts_with_an_assistant_reply() -> None:
    new = Message("user", "N" * 10)
    past = turn(1) + turn(2)
    # Budget 14*3 + 1: room for u2, a2 and a1 - a1 must go as it would open the history.
    sent, dropped = fit_to_context(
        None, past, new, context_length=14 * 4 + 1, reserve=0, count=chars
    )
    assert sent == [*turn(2), new]
    assert sent[0].role == "user"
    assert dropped == 2


def test_nothing_of_the_past_fits() -> None:
    system, new = Message("system", "S" * 50), Message("user", "N" * 50)
    sent, dropped = fit_to_context(
        system, turn(1), new, context_length=100, reserve=10, count=chars
    )
    assert sent == [system, new]
    assert dropped == 2


def test_the_new_message_is_sent_even_when_it_alone_is_too_long() -> None:
    new = Message("user", "N" * 500)
    sent, dropped = fit_to_context(None, turn(1), new, context_length=100, reserve=10, count=chars)
    assert sent == [new]
    assert dropped == 2


def test_no_context_length_means_no_trimming() -> None:
    system, new = Message("system", "S"), Message("user", "N" * 100_000)
    past = [m for n in range(50) for m in turn(n % 9, 1000)]
    for context_length in (None, 0):
        sent, dropped = fit_to_context(
            system, past, new, context_length=context_length, reserve=256, count=chars
        )
        assert sent == [system, *past, new]
        assert dropped == 0


def test_without_system_prompt() -> None:
    new = Message("user", "hello")
    sent, dropped = fit_to_context(None, turn(1), new, context_length=None, reserve=0)
    assert sent == [*turn(1), new]
    assert dropped == 0


def test_the_default_counter_is_about_four_characters_a_token() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    new = Message("user", "x" * 40)  # 10 tokens
    past = [Message("user", "y" * 40), Message("assistant", "z" * 40)]
    room = 2 * (10 + MESSAGE_OVERHEAD) + (10 + MESSAGE_OVERHEAD)
    assert fit_to_context(None, past, new, context_length=room, reserve=0)[1] == 0
    assert fit_to_context(None, past, new, context_length=room - 1, reserve=0)[1] == 2


# --- usable_history ---------------------------------------------------------------------------


def test_answered_turns_are_kept_in_order() -> None:
    messages = [
        view("user", "q1"),
        view("assistant", "a1"),
        view("user", "q2"),
        view("assistant", "a2"),
    ]
    assert usable_history(messages) == [
        Message("user", "q1"),
        Message("assistant", "a1"),
        Message("user", "q2"),
        Message("assistant", "a2"),
    ]


def test_failed_replies_and_their_prompts_are_left_out() -> None:
    messages = [
        view("user", "q1"),
        view("assistant", "", status="error"),
        view("user", "q2"),
        view("assistant", "partial but failed", status="error"),
        view("user", "q3"),
        view("assistant", "a3"),
    ]
    assert usable_history(messages) == [Message("user", "q3"), Message("assistant", "a3")]


def test_stopped_replies_with_text_count_but_empty_ones_do_not() -> None:
    messages = [
        view("user", "q1"),
        view("assistant", "half an ans", status="stopped"),
        view("user", "q2"),
        view("assistant", "", status="stopped"),
    ]
    assert usable_history(messages) == [
        Message("user", "q1"),
        Message("assistant", "half an ans"),
    ]


def test_a_prompt_still_waiting_for_its_reply_is_left_out() -> None:
    messages = [view("user", "q1"), view("assistant", "a1"), view("user", "in flight")]
    assert usable_history(messages) == [Message("user", "q1"), Message("assistant", "a1")]


def test_lanes_are_kept_apart() -> None:
    messages = [
        view("user", "same prompt", lane=0),
        view("user", "same prompt", lane=1),
        view("assistant", "lane 1 answer", lane=1),
        view("assistant", "lane 0 answer", lane=0),
        view("user", "next", lane=0),
        view("user", "next", lane=1),
        view("assistant", "", status="error", lane=1),
        view("assistant", "lane 0 again", lane=0),
    ]
    assert usable_history(messages, lane=0) == [
        Message("user", "same prompt"),
        Message("assistant", "lane 0 answer"),
        Message("user", "next"),
        Message("assistant", "lane 0 again"),
    ]
    assert usable_history(messages, lane=1) == [
        Message("user", "same prompt"),
        Message("assistant", "lane 1 answer"),
    ]
    assert usable_history(messages, lane=2) == []


def test_system_messages_are_not_part_of_the_history() -> None:
    messages = [view("system", "be brief"), view("user", "q"), view("assistant", "a")]
    assert usable_history(messages) == [Message("user", "q"), Message("assistant", "a")]
