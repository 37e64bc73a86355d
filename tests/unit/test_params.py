"""core/params.py: ranges, types, unknown names and cleaning of generation parameters."""

from __future__ import annotations

import math
from typing import Any

import pytest

from core.inference import local_gguf, openai_compat
from core.params import (
    COMMON_PARAMS,
    FREQUENCY_PENALTY,
    MAX_TOKENS,
    PRESENCE_PENALTY,
    REPETITION_PENALTY,
    SEED,
    STOP,
    TEMPERATURE,
    TOP_K,
    TOP_P,
    ParamSpec,
    clean_params,
    validate_params,
)

OPENAI = openai_compat.SPEC.params
LOCAL = local_gguf.SPEC.params


def check(values: dict[str, Any], specs: Any = OPENAI, **kw: Any) -> dict[str, str]:
    return validate_params(values, specs, **kw)


# --- ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, 0.7, 1, 2, 2.0])
def test_temperature_in_range_is_accepted(value: float) -> None:
    assert check({"temperature": value}) == {}


@pytest.mark.parametrize("value", [-0.01, 2.01, 3, 100])
def test_temperature_out_of_range_says_the_range_and_the_value(value: float) -> None:
    errors = check({"temperature": value})
    assert set(errors) == {"temperature"}
    assert errors["temperature"] == f"Temperature must be ≥ 0 and ≤ 2 (got {value:g})."


@pytest.mark.parametrize("value", [0, 0.5, 1])
def test_top_p_in_range(value: float) -> None:
    assert check({"top_p": value}) == {}


@pytest.mark.parametrize("value", [-0.1, 1.01, 2])
def test_top_p_out_of_range(value: float) -> None:
    assert "≥ 0 and ≤ 1" in check({"top_p": value})["top_p"]


def test_max_tokens_must_be_at_least_one() -> None:
    assert check({"max_tokens": 1}) == {}
    assert "≥ 1" in check({"max_tokens": 0})["max_tokens"]
    assert "≥ 1" in check({"max_tokens": -5})["max_tokens"]


def test_max_tokens_cannot_exceed_the_context_length() -> None:
    assert check({"max_tokens": 2048}, context_length=2048) == {}
    errors = check({"max_tokens": 2049}, context_length=2048)
    assert errors == {
        "max_tokens": "Max tokens (2049) is larger than the model's context length (2048)."
    }


def test_no_context_length_means_no_context_limit() -> None:
    assert check({"max_tokens": 100_000}) == {}
    assert check({"max_tokens": 100_000}, context_length=None) == {}


def test_context_limit_message_is_keyed_with_the_prefix() -> None:
    errors = check({"max_tokens": 50}, context_length=10, prefix="params.")
    assert list(errors) == ["params.max_tokens"]


def test_out_of_range_max_tokens_gets_one_message_not_two() -> None:
    errors = check({"max_tokens": 0}, context_length=10)
    assert list(errors) == ["max_tokens"] and "≥ 1" in errors["max_tokens"]


def test_stop_accepts_up_to_four_non_empty_texts() -> None:
    assert check({"stop": ["\n", "User:", "###", "END"]}) == {}
    assert check({"stop": "User:"}) == {}  # a single text counts as one entry
    errors = check({"stop": ["a", "b", "c", "d", "e"]})
    assert errors["stop"] == "Stop sequences allows at most 4 entries (got 5)."


def test_stop_rejects_empty_entries_and_non_texts() -> None:
    assert "empty entry" in check({"stop": ["ok", ""]})["stop"]
    assert "list of texts" in check({"stop": ["ok", 3]})["stop"]
    assert "list of texts" in check({"stop": {"a": 1}})["stop"]


def test_seed_is_a_non_negative_whole_number() -> None:
    assert check({"seed": 0}) == {}
    assert check({"seed": 2**53 - 1}) == {}
    assert "≥ 0" in check({"seed": -1})["seed"]
    assert "≤" in check({"seed": 2**53})["seed"]
    assert check({"seed": 1.5})["seed"] == "Seed must be a whole number."


@pytest.mark.parametrize("spec", [PRESENCE_PENALTY, FREQUENCY_PENALTY])
def test_penalties_range_from_minus_two_to_two(spec: ParamSpec) -> None:
    for good in (-2, 0, 1.5, 2):
        assert check({spec.name: good}) == {}, good
    for bad in (-2.5, 2.1):
        assert "≥ -2 and ≤ 2" in check({spec.name: bad})[spec.name]


def test_repeat_penalty_has_an_exclusive_minimum() -> None:
    """0 itself is not allowed (it would divide by zero in llama.cpp); anything above is."""
    assert check({"repeat_penalty": 1.1}, LOCAL) == {}
    assert check({"repeat_penalty": 0.01}, LOCAL) == {}
    errors = check({"repeat_penalty": 0}, LOCAL)
    assert errors["repeat_penalty"] == "Repeat penalty must be > 0 and ≤ 10 (got 0)."
    assert REPETITION_PENALTY.check(0) is not None
    assert REPETITION_PENALTY.check(1e-9) is None
    assert REPETITION_PENALTY.range_text() == "> 0 and ≤ 10"


def test_exclusive_maximum() -> None:
    spec = ParamSpec("x", "X", "float", minimum=0, maximum=1, exclusive_max=True)
    assert spec.check(0.999) is None
    assert spec.check(1) == "X must be ≥ 0 and < 1 (got 1)."


def test_top_k_is_a_local_setting_with_a_floor_of_one() -> None:
    assert check({"top_k": 40}, LOCAL) == {}
    assert "≥ 1" in check({"top_k": 0}, LOCAL)["top_k"]
    assert TOP_K in LOCAL and TOP_K not in OPENAI


# --- types ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["temperature", "top_p", "max_tokens", "seed", "presence_penalty"])
def test_bool_is_not_a_number(name: str) -> None:
    errors = check({name: True})
    assert errors[name].endswith("must be a number.")


@pytest.mark.parametrize("value", ["0.7", [0.7], {"v": 1}])
def test_text_and_containers_are_not_numbers(value: Any) -> None:
    assert check({"temperature": value})["temperature"] == "Temperature must be a number."


@pytest.mark.parametrize("value", [12.5, 256.0])
def test_a_float_is_not_accepted_where_a_whole_number_is_needed(value: float) -> None:
    """JSON and servers keep 256.0 a float; an int setting must be an int."""
    assert check({"max_tokens": value})["max_tokens"] == "Max tokens must be a whole number."


def test_a_float_max_tokens_cannot_slip_past_the_context_limit() -> None:
    errors = check({"max_tokens": 4096.0}, context_length=2048)
    assert "max_tokens" in errors


def test_ints_are_fine_for_float_settings() -> None:
    assert check({"temperature": 1, "top_p": 1}) == {}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value: float) -> None:
    assert "temperature" in check({"temperature": value})


def test_bool_settings_want_a_bool() -> None:
    spec = ParamSpec("echo", "Echo", "bool")
    assert spec.check(True) is None
    assert spec.check(1) == "Echo must be on or off."


def test_none_means_unset_and_is_always_fine() -> None:
    values = {s.name: None for s in COMMON_PARAMS}
    assert check(values) == {}
    assert check({"made_up": None}) == {}


# --- names ------------------------------------------------------------------------------------


def test_unknown_names_are_rejected_with_the_prefix() -> None:
    errors = check({"temprature": 0.5, "temperature": 0.5}, prefix="params.")
    assert errors == {
        "params.temprature": "'temprature' is not a setting this connection kind accepts."
    }


def test_a_setting_of_another_kind_is_unknown_here() -> None:
    assert "repeat_penalty" in check({"repeat_penalty": 1.1}, OPENAI)
    assert "presence_penalty" in check({"presence_penalty": 1}, LOCAL)


def test_every_problem_is_reported_at_once() -> None:
    errors = check(
        {"temperature": 5, "top_p": -1, "max_tokens": 0, "stop": [""], "seed": "x", "nope": 1}
    )
    assert set(errors) == {"temperature", "top_p", "max_tokens", "stop", "seed", "nope"}


def test_range_text() -> None:
    assert TEMPERATURE.range_text() == "≥ 0 and ≤ 2"
    assert MAX_TOKENS.range_text() == "≥ 1 and ≤ 1e+06"
    assert STOP.range_text() == ""
    assert TOP_P.range_text() == "≥ 0 and ≤ 1"
    assert SEED.check(7) is None


# --- clean_params -----------------------------------------------------------------------------


def test_clean_params_drops_unset_values() -> None:
    cleaned = clean_params(
        {"temperature": 0.0, "top_p": None, "stop": [], "seed": 0, "max_tokens": "", "x": False}
    )
    assert cleaned == {"temperature": 0.0, "seed": 0, "x": False}


def test_clean_params_splits_stop_text_into_lines() -> None:
    assert clean_params({"stop": "User:\n\n###"}) == {"stop": ["User:", "###"]}
    assert clean_params({"stop": "\n\n"}) == {}
    assert clean_params({"stop": ["keep", "as is"]}) == {"stop": ["keep", "as is"]}


def test_clean_params_does_not_change_its_input() -> None:
    values = {"stop": "a\nb", "temperature": None}
    clean_params(values)
    assert values == {"stop": "a\nb", "temperature": None}
