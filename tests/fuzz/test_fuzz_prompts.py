"""core/inference/prompts.py: check_template, render, resolve and StopFilter.

Any template source gets None or a message; a template that passes renders any conversation
to text or fails with ConfigurationError; the built-in templates keep every message of a
chat; StopFilter never lets a stop sequence through and only ever drops the input's end.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from core.inference import prompts
from core.inference.prompts import BUILTIN_TEMPLATES, ChatTemplate, StopFilter
from core.inference.types import ConfigurationError, Message
from tests.fuzz.strategies import (
    any_conversation,
    budget,
    chat_conversation,
    json_values,
    odd_text,
)

# --- Jinja sources ------------------------------------------------------------------------------

EXPRESSIONS = (
    "m.content",
    "m.role",
    "bos_token",
    "eos_token",
    "messages | length",
    "messages[0].content",
    "messages[-1]['content']",
    "undefined_name",
    "undefined_name.attr",
    "1 / 0",
    "m.content | upper",
    "m.content * 3",
    "raise_exception('roles must alternate')",
    "m.__class__",
    "''.__class__.__mro__",
    "range(5) | list",
    "messages | map(attribute='content') | join('\\n')",
    "'a' ~ 'b'",
    "m.content[:5]",
    "loop.index",
    "default_system",
    "add_generation_prompt",
)
nested = st.builds(
    lambda depth, open_, close: "{{ " + open_ * depth + "1" + close * depth + " }}",
    st.one_of(st.integers(1, 20), st.integers(150, 600)),
    st.sampled_from(["(", "["]),
    st.sampled_from([")", "]"]),
)
leaves = st.one_of(
    odd_text,
    st.sampled_from(EXPRESSIONS).map(lambda e: "{{ " + e + " }}"),
    st.sampled_from(["{%", "{{", "{#", "%}", "}}", "{% endfor %}", "{% else %}", "{# note #}"]),
    st.sampled_from(["{% set x = 1 %}", "{% set ns = namespace(s='') %}"]),
    nested,
)


def _blocks(kids: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    body = st.lists(kids, min_size=1, max_size=3).map("".join)
    return st.one_of(
        body.map(lambda b: "{% for m in messages %}" + b + "{% endfor %}"),
        body.map(lambda b: "{% for m in messages if m.role != 'system' %}" + b + "{% endfor %}"),
        body.map(lambda b: "{% for i in range(3) %}" + b + "{% endfor %}"),
        body.map(lambda b: "{% if add_generation_prompt %}" + b + "{% endif %}"),
        st.builds(
            lambda a, b: "{% if m.role == 'user' %}" + a + "{% else %}" + b + "{% endif %}",
            body,
            body,
        ),
        body,
    )


template_sources = st.one_of(
    st.recursive(leaves, _blocks, max_leaves=8),
    st.sampled_from([t.source for t in BUILTIN_TEMPLATES.values()]),
    odd_text,
)


@budget(400)
@given(template_sources)
@example("{{ " + "(" * 300 + "1" + ")" * 300 + " }}")  # RecursionError escaped the parser
def test_check_template_gives_none_or_a_message(source: str) -> None:
    problem = prompts.check_template(source)
    if problem is not None:
        assert isinstance(problem, str) and problem.strip()


@budget(250)
@given(template_sources, any_conversation, st.booleans(), st.booleans())
def test_a_template_that_passes_renders_or_fails_plainly(
    source: str, conversation: list[Message], generation_prompt: bool, bos: bool
) -> None:
    if prompts.check_template(source) is not None:
        return
    template = ChatTemplate("custom", "Custom template", source)
    try:
        prompt = prompts.render(
            template, conversation, add_generation_prompt=generation_prompt, include_bos=bos
        )
    except ConfigurationError as err:
        assert err.message.startswith("The chat template 'Custom template' failed")
    else:
        assert isinstance(prompt, str)


@budget(500)
@given(st.sampled_from(sorted(BUILTIN_TEMPLATES)), chat_conversation(), st.booleans())
def test_builtin_templates_keep_every_message_of_a_chat(
    name: str, conversation: list[Message], bos: bool
) -> None:
    prompt = prompts.render(BUILTIN_TEMPLATES[name], conversation, include_bos=bos)
    for message in conversation:
        assert message.content in prompt, (name, message)


@budget(250)
@given(st.sampled_from(sorted(BUILTIN_TEMPLATES)), any_conversation, st.booleans())
def test_builtin_templates_render_any_sequence_of_roles(
    name: str, conversation: list[Message], generation_prompt: bool
) -> None:
    prompt = prompts.render(
        BUILTIN_TEMPLATES[name], conversation, add_generation_prompt=generation_prompt
    )
    for message in conversation:
        if message.role != "system":
            assert message.content in prompt


@budget(150)
@given(
    st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "chat_template": st.one_of(
                    st.sampled_from([*BUILTIN_TEMPLATES, "custom", "nope", ""]), json_values
                ),
                "custom_template": st.one_of(template_sources, json_values),
                "template_stop": st.one_of(st.lists(odd_text, max_size=3), json_values),
            },
        ),
        st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    )
)
@example({"chat_template": ["plain"]})  # unhashable name: TypeError
@example({"chat_template": "custom", "template_stop": 5})
def test_resolve_gives_a_template_or_a_configuration_error(settings: dict[str, Any]) -> None:
    try:
        template = prompts.resolve(settings)
    except ConfigurationError as err:
        assert err.message.strip()
        return
    assert isinstance(template.source, str)
    assert all(isinstance(s, str) and s for s in template.stop)


# --- StopFilter ---------------------------------------------------------------------------------

small_text = st.text(alphabet="ab\nU:s ", max_size=30)
stop_lists = st.one_of(
    st.lists(st.text(alphabet="ab\nU:s ", max_size=4), max_size=3),
    st.sampled_from([t.stop for t in BUILTIN_TEMPLATES.values()]).map(list),
)


@st.composite
def chunked(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=8)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def run(stops: list[str], chunks: list[str], *, drop_partial: bool) -> tuple[str, str]:
    """(everything fed out, what flush gives)."""
    f = StopFilter(stops)
    out = "".join(f.feed(c) for c in chunks)
    return out, f.flush(drop_partial=drop_partial)


@budget(800)
@given(stop_lists, small_text, st.data())
@example(["\nUser:", "User:"], "Hi\nUser: x", None)
def test_stop_filter_emits_no_stop_and_only_drops_the_end(
    stops: list[str], text: str, data: st.DataObject | None
) -> None:
    chunks = data.draw(chunked(text)) if data else [text]
    live = [s for s in stops if s]
    out, held = run(stops, chunks, drop_partial=False)
    assert text.startswith(out + held)
    assert not any(s in out + held for s in live)
    if not any(s in text for s in live):  # nothing to cut: only a possible stop start is held
        assert out + held == text
        assert not held or any(s.startswith(held) and s != held for s in live)
    else:  # cut right before a stop sequence
        assert held == "" and any(text[len(out) :].startswith(s) for s in live)
    dropped_out, dropped_held = run(stops, chunks, drop_partial=True)
    assert dropped_out == out and text.startswith(dropped_out + dropped_held)


@budget(600)
@given(stop_lists, small_text, st.data())
def test_stop_filter_gives_the_same_text_however_the_stream_is_cut(
    stops: list[str], text: str, data: st.DataObject
) -> None:
    live = [s for s in stops if s]
    # A stop inside another one (not at its end) completes first when streamed: the streamed
    # cut is then earlier than the whole-text one, which is what a server would do too.
    if any(s2 != s1 and s2 in s1[:-1] for s1 in live for s2 in live):
        return
    whole = StopFilter(stops).apply(text)
    out, held = run(stops, data.draw(chunked(text)), drop_partial=True)
    assert out + held == whole
