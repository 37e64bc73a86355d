"""Shared strategies and checks for the fuzz suite (profiles: tests/fuzz/conftest.py)."""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from core import secrets as _secrets
from core.inference.types import (
    ERROR_KINDS,
    Details,
    Finish,
    InferenceError,
    Message,
    TextDelta,
    Usage,
)

LONG_FACTOR = int(os.environ.get("PLUGBOARD_FUZZ_FACTOR", "50"))


def budget(cases: int) -> settings:
    """`cases` examples under the derandomized "fuzz" profile; ×LONG_FACTOR under "long"."""
    if settings.get_current_profile_name() == "long":
        return settings(settings.get_profile("long"), max_examples=cases * LONG_FACTOR)
    return settings(settings.get_profile("fuzz"), max_examples=cases)


# --- text ---------------------------------------------------------------------------------------

# Pieces that have broken parsers before, anywhere: control and invisible characters, the
# typographic characters the UI itself uses, template and JSONata syntax, wire-format markers.
TRICKY = (
    "",
    " ",
    "\x00",
    "\x7f",
    "\r",
    "\n",
    "\r\n",
    "\t",
    "\u200b",
    "\u00a0",
    "\u3000",
    "\u2028",
    "…",
    "•",
    "é",
    "💥",
    "\ufeff",
    "%",
    "%zz",
    "xn--",
    "~",
    "[DONE]",
    "data:",
    "{{",
    "}}",
    "{%",
    "%}",
    "${",
    "$",
    "\\",
    '"',
    "'",
    "<html>",
    "<title>",
    "User:",
    "\nUser:",
    "</s>",
)

odd_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=6)), max_size=8).map("".join),
)
ascii_key_chars = string.ascii_letters + string.digits + "-_.~+/="
secrets_ = st.text(alphabet=string.printable.strip(), min_size=4, max_size=48)
api_keys = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(["sk-", "sk-proj-", "hf_", "", "Bearer-"]),
    st.text(alphabet=ascii_key_chars, min_size=12, max_size=48),
)

# --- JSON ---------------------------------------------------------------------------------------

BIG_INTS = (2**53, 2**53 - 1, 2**63, -(2**63) - 1, 10**20, 10**400, -(10**400))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(BIG_INTS),
    st.floats(),  # NaN and ±Infinity too: json.loads accepts them
    odd_text,
)
json_keys = st.one_of(st.text(max_size=10), st.sampled_from(["error", "detail", "message", "msg"]))
json_values = st.recursive(
    json_scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(json_keys, kids, max_size=4)
    ),
    max_leaves=16,
)


def to_json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


# Nesting far beyond what a parser can recurse through, and just around the limit.
deep_json = st.builds(
    lambda depth, shape, close: (
        (shape[0] * depth) + shape[1] + (shape[2] * depth if close else "")
    ).encode(),
    st.one_of(st.integers(1, 60), st.integers(900, 1100), st.integers(5000, 60_000)),
    st.sampled_from([("[", "", "]"), ('{"error":', '"x"', "}"), ('{"a":[', "1", "]}")]),
    st.booleans(),
)

# --- conversations ------------------------------------------------------------------------------

roles = st.sampled_from(["system", "user", "assistant"])
contents = st.one_of(st.text(max_size=40), odd_text)
messages = st.builds(Message, roles, contents)
any_conversation = st.lists(messages, max_size=6)


@st.composite
def chat_conversation(draw: st.DrawFn) -> list[Message]:
    """The shape core.chat sends: an optional system prompt, turns, a user message last."""
    out = []
    if draw(st.booleans()):
        out.append(Message("system", draw(contents)))
    for _ in range(draw(st.integers(0, 3))):
        out.append(Message("user", draw(contents)))
        out.append(Message("assistant", draw(contents)))
    out.append(Message("user", draw(contents)))
    return out


# --- checks -------------------------------------------------------------------------------------


def is_count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def assert_events_well_typed(events: Iterable[Any]) -> None:
    """What core.chat relies on: text is text, token counts are whole numbers, and so on."""
    for event in events:
        if isinstance(event, TextDelta):
            assert isinstance(event.text, str) and event.text, event
        elif isinstance(event, Usage):
            assert is_count(event.prompt_tokens) and is_count(event.completion_tokens), event
        elif isinstance(event, Finish):
            assert isinstance(event.reason, str), event
        elif isinstance(event, Details):
            assert isinstance(event.data, dict), event
        else:
            raise AssertionError(f"not a stream event: {event!r}")


def assert_plain_error(err: InferenceError) -> None:
    """A typed error a person can read: a kind we know, a non-empty one-paragraph message."""
    assert type(err).kind in ERROR_KINDS, type(err)
    assert isinstance(err.message, str) and err.message.strip(), err
    assert str(err) == err.message
    assert isinstance(err.detail, str)


@contextmanager
def known_secrets() -> Iterator[None]:
    """remember() is process-wide: put back what it knew, so no other test sees ours."""
    with _secrets._known_lock:
        saved = set(_secrets._known)
    try:
        yield
    finally:
        with _secrets._known_lock:
            _secrets._known.clear()
            _secrets._known.update(saved)
