"""core/inference/custom_api.py: validate_settings, check_expression, evaluate_expression
(with its time and depth bounds), the response shape checks and standard_body.

Every expression either compiles or gets a plain syntax message; every evaluation ends —
within its time bound — in a value or an ExpressionFailed; the adapter turns whatever an
expression or a server gives into a list of the right type or a typed InferenceError.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.inference import custom_api
from core.inference.custom_api import (
    PRESETS,
    RESPONSE_TYPES,
    CustomAPIAdapter,
    ExpressionFailed,
    check_expression,
    evaluate_expression,
    standard_body,
    validate_settings,
)
from core.inference.target import Target
from core.inference.types import (
    BadRequest,
    BadResponse,
    ConfigurationError,
    GenerationParams,
    InferenceError,
)
from tests.fuzz.jsonata_grammar import any_expression, expressions
from tests.fuzz.strategies import (
    any_conversation,
    assert_plain_error,
    budget,
    contents,
    json_values,
    odd_text,
)

TIMEOUT_MS = 50
CLIENT = httpx.Client()  # no request is sent; a new client per case costs ~30 ms
SLACK_S = 1.5  # one JSONata step (a range, a sort) runs between two checks of the clock


@pytest.fixture(autouse=True, scope="module")
def short_bounds() -> Iterator[None]:
    """Endless loops in generated expressions stop after 50 ms, not the default second."""
    with mock.patch.object(custom_api, "EVAL_TIMEOUT_MS", TIMEOUT_MS):
        yield


standard_bodies = st.builds(
    lambda convs, n, seq_len, temperature: {
        "messages": [[{"role": m.role, "content": m.content} for m in c] for c in convs],
        "N": n,
        "seq_len": seq_len,
        "temperature": temperature,
    },
    st.lists(any_conversation, max_size=3),
    st.integers(1, 16),
    st.integers(1, 4096),
    st.floats(0, 2),
)
reply_shaped = st.one_of(
    st.builds(lambda t: {"choices": [{"message": {"content": t}}]}, contents),
    st.builds(lambda t: {"generated_text": t}, contents),
    st.lists(contents, max_size=3),
    st.lists(st.booleans(), max_size=3),
)
FAILURE_REASONS = {"syntax", "timeout", "depth", "error"}


def assert_failure(exc: ExpressionFailed) -> None:
    assert exc.reason in FAILURE_REASONS, exc.reason
    assert isinstance(exc.message, str) and exc.message.strip()


@budget(600)
@given(any_expression)
def test_check_expression_gives_none_or_a_syntax_message(text: str) -> None:
    problem = check_expression(text)
    if problem is not None:
        assert problem.startswith("Syntax error") and problem.endswith(".")


@budget(150)
@given(expressions, st.one_of(standard_bodies, json_values, reply_shaped))
@example("$reduce([1..3000], function($acc, $v) { {'a': $acc} }, {})", {})  # a 3000-deep result
@example("($f := function($n) { $f($n) }; $f(1))", {})
def test_evaluation_ends_in_a_value_or_a_plain_failure_in_time(text: str, data: Any) -> None:
    assert check_expression(text) is None, text  # the grammar only writes valid syntax
    start = time.monotonic()
    try:
        evaluate_expression(text, data, {"model": "m"})
    except ExpressionFailed as exc:
        assert_failure(exc)
        assert exc.reason != "syntax"
    elapsed = time.monotonic() - start
    assert elapsed < TIMEOUT_MS / 1000 + SLACK_S, (text, elapsed)


def adapter(model: str = "", **settings: Any) -> CustomAPIAdapter:
    target = Target(
        kind="custom_api", base_url="http://127.0.0.1:9/x", model=model, settings=settings
    )
    return CustomAPIAdapter(target, CLIENT)


response_expressions = st.one_of(
    st.just(""), st.sampled_from([p.response_expression for p in PRESETS.values()]), any_expression
)


@budget(200)
@given(
    response_expressions,
    st.sampled_from(RESPONSE_TYPES),
    st.one_of(reply_shaped, json_values),
)
@example("$reduce([1..3000], function($acc, $v) { {'a': $acc} }, {})", "string", {})
def test_response_becomes_a_typed_list_or_a_typed_error(
    expression: str, response_type: str, data: Any
) -> None:
    api = adapter(response_expression=expression, response_type=response_type)
    try:
        replies = api.transform_response(data)
    except InferenceError as err:
        assert_plain_error(err)
        assert isinstance(err, BadResponse | ConfigurationError), type(err)
        return
    assert isinstance(replies, list)
    wanted = bool if response_type == "boolean" else str
    assert all(type(r) is wanted for r in replies), replies


@budget(150)
@given(
    st.one_of(
        st.just(""),
        st.sampled_from([p.request_expression for p in PRESETS.values()]),
        any_expression,
    ),
    standard_bodies,
    st.sampled_from(["", "m", "org/model"]),
)
@example("$reduce([1..3000], function($acc, $v) { {'a': $acc} }, {})", {"messages": []}, "")
def test_request_body_is_json_or_a_configuration_error(
    expression: str, standard: dict[str, Any], model: str
) -> None:
    api = adapter(model, request_expression=expression)
    try:
        body = api.transform_request(standard)
    except InferenceError as err:
        assert_plain_error(err)
        assert isinstance(err, ConfigurationError), type(err)
        return
    json.dumps(body, allow_nan=False)  # what HttpEndpoint sends must be JSON


@st.composite
def custom_settings(draw: st.DrawFn) -> dict[str, Any]:
    def either(typed: st.SearchStrategy[Any]) -> Any:
        return draw(st.one_of(typed, json_values))

    keys = draw(st.sets(st.sampled_from(sorted(custom_api.CustomAPISettings().to_dict()))))
    out: dict[str, Any] = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2))
    typed: dict[str, st.SearchStrategy[Any]] = {
        "request_expression": any_expression,
        "response_expression": any_expression,
        "response_type": st.sampled_from([*RESPONSE_TYPES, "text"]),
        "batch_size": st.integers(-2, 2000),
        "multi_turn": st.booleans(),
        "enable_retry": st.booleans(),
        "preset": st.sampled_from([*PRESETS, "x"]),
    }
    for key in keys:
        out[key] = either(typed[key])
    return out


@budget(200)
@given(custom_settings())
def test_validate_settings_gives_settings_messages(settings: dict[str, Any]) -> None:
    errors = validate_settings(settings)
    assert isinstance(errors, dict)
    for key, message in errors.items():
        assert key.startswith("settings.") and isinstance(message, str) and message.strip()
    problem = custom_api.settings_problem(settings)
    assert bool(problem) == bool(errors)
    if not errors:  # accepted settings build an adapter that can make a request body
        api = adapter(**settings)
        try:
            api.transform_request(standard_body([[]], GenerationParams()))
        except InferenceError as err:
            assert isinstance(err, ConfigurationError)


@budget(300)
@given(
    st.lists(any_conversation, max_size=3),
    st.builds(
        GenerationParams,
        temperature=st.one_of(st.none(), st.floats(0, 2)),
        max_tokens=st.one_of(st.none(), st.integers(1, 10**6)),
        extra=st.one_of(st.just({}), st.fixed_dictionaries({"n": json_values})),
    ),
    st.booleans(),
)
def test_standard_body_keeps_every_conversation_or_says_why_not(
    conversations: list[Any], params: GenerationParams, multi_turn: bool
) -> None:
    try:
        body = standard_body(conversations, params, multi_turn=multi_turn)
    except BadRequest as err:
        assert_plain_error(err)
        return
    assert len(body["messages"]) == len(conversations)
    assert 1 <= body["N"] <= custom_api.MAX_N
    for sent, conversation in zip(body["messages"], conversations, strict=True):
        if multi_turn:
            assert [m["content"] for m in sent] == [m.content for m in conversation]
        else:
            users = [m.content for m in conversation if m.role == "user"]
            assert sent == [{"role": "user", "content": users[-1]}]
    json.dumps(body)


@budget(200)
@given(st.one_of(odd_text, json_values), st.sampled_from(RESPONSE_TYPES), st.booleans())
def test_reply_shape_check_never_raises_anything_else(
    value: Any, response_type: str, expression: bool
) -> None:
    try:
        replies = custom_api._check_replies(value, response_type, expression=expression)
    except BadResponse as err:
        assert_plain_error(err)
    else:
        assert replies is value and isinstance(replies, list)


# Known limits, kept as strict xfails so a fix shows up as XPASS: jsonata-python checks its
# clock between evaluation steps, and some single steps are unbounded — a backtracking regex
# match, or $eval parsing a long text (found by the fuzzer: '$eval($string([1..100000]))'
# took 8 s against a 100 ms bound). A hard bound needs the evaluation in a process that can
# be killed, or a linear-time regex engine (Jsonata(regex_engine=...), e.g. google-re2) plus
# a bounded $eval: a new dependency or a design change, not a targeted fix.
@pytest.mark.xfail(strict=True, reason="one JSONata step runs unbounded (see above)")
@pytest.mark.parametrize(  # ~0.2 s each here, 40x their bound
    "expression",
    [
        '$match("' + "a" * 22 + '!", /(a+)+$/)',
        '$eval("[' + ",".join(map(str, range(20000))) + ']")',
    ],
    ids=["backtracking-regex", "eval-of-long-text"],
)
def test_a_single_slow_step_escapes_the_time_bound(expression: str) -> None:
    with mock.patch.object(custom_api, "EVAL_TIMEOUT_MS", 5):
        start = time.monotonic()
        with contextlib.suppress(ExpressionFailed):
            evaluate_expression(expression, {})
        assert time.monotonic() - start < 0.03  # 6x the bound
