"""The Custom API kind's settings rules, presets and standard request (no network)."""

from __future__ import annotations

import pytest

from core.inference import custom_api
from core.inference.custom_api import (
    PRESETS,
    SPEC,
    CustomAPISettings,
    check_expression,
    standard_body,
    validate_settings,
)
from core.inference.registry import spec_for
from core.inference.types import BadRequest, GenerationParams, Message


def test_defaults_and_every_preset_are_valid():
    assert validate_settings({}) == {}
    assert validate_settings(SPEC.settings_defaults) == {}
    for name, preset in PRESETS.items():
        settings = {
            "preset": name,
            "request_expression": preset.request_expression,
            "response_expression": preset.response_expression,
            "response_type": preset.response_type,
        }
        assert validate_settings(settings) == {}, name


def test_the_kind_is_registered_with_its_settings_hook():
    spec = spec_for("custom_api")
    assert spec is SPEC and spec.label == "Custom API (JSONata)"
    assert spec.settings_rules is validate_settings
    labels = {p.name: p.label for p in spec.params}
    assert labels == {
        "temperature": "Temperature",
        "max_tokens": "Max length (seq_len)",
        "n": "N (replies per prompt)",
    }
    assert spec.check_params({"temperature": 2.5, "n": 17}) == {
        "temperature": "Temperature must be ≥ 0 and ≤ 2 (got 2.5).",
        "n": "N (replies per prompt) must be ≥ 1 and ≤ 16 (got 17).",
    }


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            '{"a": }',
            "Syntax error at line 1, column 7: The symbol } cannot be used as a unary operator.",
        ),
        ('{\n  "b": [1, 2\n}', "Syntax error at line 3, column 1: Expected ], got }."),
        (
            "$reduce(messages, $append",
            "Syntax error at line 1, column 25: Expected ) before end of expression.",
        ),
        (
            '"unterminated',
            "Syntax error at line 1, column 13: String literal must be "
            "terminated by a matching quote.",
        ),
    ],
)
def test_syntax_errors_name_line_column_and_jsonatas_message(expression, message):
    assert check_expression(expression) == message
    errors = validate_settings({"response_expression": expression})
    assert errors == {"settings.response_expression": message}


def test_an_empty_expression_means_no_transformation():
    assert check_expression("") is None and check_expression("  \n") is None
    assert validate_settings({"request_expression": "", "response_expression": None}) == {}


def test_a_parser_crash_is_a_syntax_error_too():
    # jsonata-python raises IndexError (not a JException) for a lone comment.
    assert check_expression("/* nothing */") == (
        "Syntax error: the expression could not be read (IndexError: string index out of range)."
    )


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"response_type": "json"}, "response_type", "Response type must be string or boolean"),
        ({"batch_size": 0}, "batch_size", "between 1 and 1024 (got 0)"),
        ({"batch_size": 5000}, "batch_size", "between 1 and 1024 (got 5000)"),
        ({"batch_size": "4"}, "batch_size", "must be a whole number"),
        ({"batch_size": True}, "batch_size", "must be a whole number"),
        ({"batch_size": 2.0}, "batch_size", "must be a whole number"),
        ({"multi_turn": "yes"}, "multi_turn", "Multi-turn must be on or off."),
        ({"enable_retry": 1}, "enable_retry", "Retry on failure must be on or off."),
        ({"request_expression": 42}, "request_expression", "The expression must be text."),
        ({"preset": 3}, "preset", "The preset is a name."),
    ],
)
def test_each_bad_setting_is_named(settings, field, message):
    errors = validate_settings(settings)
    assert list(errors) == [f"settings.{field}"]
    assert message in errors[f"settings.{field}"]


def test_problems_as_one_sentence_for_the_adapter():
    assert custom_api.settings_problem({}) == ""
    assert custom_api.settings_problem({"batch_size": 0, "response_type": "x"}) == (
        "Check the card's settings. Response type: Response type must be string or boolean "
        "(got 'x'). Batch size: Batch size must be between 1 and 1024 (got 0)."
    )


def test_settings_from_a_dict_fall_back_to_defaults():
    assert CustomAPISettings.from_dict({}) == CustomAPISettings()
    odd = CustomAPISettings.from_dict({"batch_size": "4", "multi_turn": "no", "preset": None})
    assert odd == CustomAPISettings()
    assert CustomAPISettings.from_dict(SPEC.settings_defaults).to_dict() == SPEC.settings_defaults


def test_standard_body_single_and_multi_turn():
    conversation = [
        Message("system", "Be brief."),
        Message("user", "What is ML?"),
        Message("assistant", "Learning from data."),
        Message("user", "And NNs?"),
    ]
    params = GenerationParams(temperature=1.0, max_tokens=1024, extra={"n": 2})
    assert standard_body([conversation], params, multi_turn=False) == {
        "messages": [[{"role": "user", "content": "And NNs?"}]],
        "N": 2,
        "seq_len": 1024,
        "temperature": 1.0,
    }
    body = standard_body([conversation, conversation[:2]], GenerationParams())
    assert [len(c) for c in body["messages"]] == [4, 2]
    assert (body["N"], body["seq_len"], body["temperature"]) == (1, 512, 0.7)  # the defaults
    with pytest.raises(BadRequest, match="no user message"):
        standard_body([[Message("system", "x")]], params, multi_turn=False)
    with pytest.raises(BadRequest, match="N \\(replies per prompt\\)"):
        standard_body([conversation], GenerationParams(extra={"n": 0}))


def test_the_model_name_is_bound_as_model_and_dropped_when_empty():
    expression = PRESETS["openai_chat"].request_expression
    body = standard_body([[Message("user", "hi")]], GenerationParams())
    assert custom_api.evaluate_expression(expression, body, {"model": "m-1"})["model"] == "m-1"
    assert "model" not in custom_api.evaluate_expression(expression, body, {"model": None})
