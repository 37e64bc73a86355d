"""core/params.py and core/inference/registry.py: ParamSpec.check, validate_params,
clean_params, KindSpec.check_params (with TGI's rules between parameters).

A value a spec accepts is in its range and of its type, whatever was thrown at it; a card
whose parameters pass its kind's checks yields a request body every adapter can send.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
from hypothesis import example, given
from hypothesis import strategies as st

from core.inference import custom_api
from core.inference.openai_compat import OpenAICompatAdapter
from core.inference.registry import kinds
from core.inference.target import Target
from core.inference.tgi import TGIAdapter, tgi_rules
from core.inference.types import GenerationParams, Message
from core.params import MAX_TOKENS, ParamSpec, clean_params, validate_params
from tests.fuzz.strategies import BIG_INTS, budget, json_values, odd_text

SPECS: dict[tuple[str, str], ParamSpec] = {
    (kind, spec.name): spec for kind, k in kinds().items() for spec in k.params
}
ALL_SPECS = sorted(SPECS.values(), key=lambda s: (s.name, s.type, s.minimum or 0, s.maximum or 0))

param_values = st.one_of(
    json_values,
    st.integers(),
    st.sampled_from(BIG_INTS),
    st.floats(),
    st.sampled_from([0, 1, -1, 0.0, 1.0, 2, 2.0, 100, 16, 17, 4, 10**6, 2**53, 1e-320]),
    st.lists(st.one_of(odd_text, st.integers()), max_size=6),
    st.tuples(odd_text, odd_text),
)


def in_range(spec: ParamSpec, value: Any) -> bool:
    if spec.minimum is not None and (
        value <= spec.minimum if spec.exclusive_min else value < spec.minimum
    ):
        return False
    return spec.maximum is None or not (
        value >= spec.maximum if spec.exclusive_max else value > spec.maximum
    )


def accepted_correctly(spec: ParamSpec, value: Any) -> bool:
    if value is None:
        return True
    if spec.type == "bool":
        return isinstance(value, bool)
    if spec.type == "text_list":
        items = [value] if isinstance(value, str) else value
        return (
            isinstance(items, list | tuple)
            and all(isinstance(v, str) and v for v in items)
            and (spec.max_items is None or len(items) <= spec.max_items)
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if spec.type == "int" and not isinstance(value, int):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return in_range(spec, value)


@budget(800)
@given(st.sampled_from(ALL_SPECS), param_values)
@example(MAX_TOKENS, 10**400)  # "(got {value:g})" raised OverflowError for a huge whole number
def test_param_check_never_accepts_out_of_range_and_never_raises(
    spec: ParamSpec, value: Any
) -> None:
    problem = spec.check(value)
    if problem is None:
        assert accepted_correctly(spec, value), (spec.name, value)
    else:
        assert isinstance(problem, str) and problem.startswith(spec.label), problem
        assert not accepted_correctly(spec, value), (spec.name, value, problem)


values_dicts = st.dictionaries(
    st.one_of(st.sampled_from(sorted({name for _, name in SPECS})), st.text(max_size=6)),
    param_values,
    max_size=6,
)


@budget(300)
@given(
    st.sampled_from(sorted(kinds())),
    values_dicts,
    st.one_of(st.none(), st.integers(1, 10**7)),
    st.sampled_from(["", "params."]),
)
def test_check_params_gives_prefixed_messages(
    kind: str, values: dict[str, Any], context_length: int | None, prefix: str
) -> None:
    spec = kinds()[kind]
    errors = spec.check_params(values, context_length=context_length, prefix=prefix)
    assert isinstance(errors, dict)
    for key, message in errors.items():
        assert key.startswith(prefix) and isinstance(message, str) and message.strip()
    plain = validate_params(values, spec.params, context_length=context_length, prefix=prefix)
    if not plain:  # within every range: each value passes its spec
        by_name = {p.name: p for p in spec.params}
        for name, value in values.items():
            if name in by_name:
                assert accepted_correctly(by_name[name], value)
            else:
                assert value is None
        max_tokens = values.get("max_tokens")
        if context_length and isinstance(max_tokens, int):
            assert max_tokens <= context_length


@budget(300)
@given(values_dicts)
def test_clean_params_is_idempotent_and_drops_unset_values(values: dict[str, Any]) -> None:
    cleaned = clean_params(values)
    assert clean_params(cleaned) == cleaned
    assert all(v is not None and v != "" and v != [] for v in cleaned.values())
    if isinstance(values.get("stop"), str):
        assert "stop" not in cleaned or (isinstance(cleaned["stop"], list) and all(cleaned["stop"]))


TGI_NAMES = {p.name: p for p in kinds()["tgi"].params}


@st.composite
def valid_values(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """Values each within its spec's range (what validate_params lets through)."""
    out: dict[str, Any] = {}
    for spec in kinds()[kind].params:
        if not draw(st.booleans()):
            continue
        if spec.type == "bool":
            out[spec.name] = draw(st.booleans())
        elif spec.type == "text_list":
            out[spec.name] = draw(
                st.lists(odd_text.filter(bool), min_size=1, max_size=spec.max_items or 4)
            )
        else:
            lo = spec.minimum if spec.minimum is not None else -1e6
            hi = spec.maximum if spec.maximum is not None else 1e6
            if spec.type == "int":
                value: float = draw(st.integers(math.ceil(lo), math.floor(hi)))
            else:
                value = draw(st.floats(lo, hi, allow_nan=False))
            if spec.check(value) is None:
                out[spec.name] = value
    return out


@budget(300)
@given(valid_values("tgi"))
def test_tgi_rules_hold_for_every_accepted_combination(values: dict[str, Any]) -> None:
    errors = kinds()["tgi"].check_params(values)
    assert errors == tgi_rules(values)
    if errors:
        return
    stream = values.get("stream", True)
    if (values.get("best_of") or 1) > 1:
        assert not stream and values.get("seed") is None
        assert values.get("do_sample") or any(
            values.get(k) is not None for k in ("temperature", "top_k", "top_p", "typical_p")
        )
    if values.get("decoder_input_details"):
        assert not stream


TARGET = "http://127.0.0.1:9/v1"
CLIENT = httpx.Client()  # no request is sent; a new client per case costs ~30 ms
CONVERSATION = [Message("system", "s"), Message("user", "u")]


@budget(200)
@given(st.sampled_from(["openai_compat", "tgi", "custom_api"]), st.data())
def test_accepted_parameters_make_a_sendable_body(kind: str, data: st.DataObject) -> None:
    values = data.draw(valid_values(kind))
    if kinds()[kind].check_params(values):
        return
    params = GenerationParams.from_dict(clean_params(values))
    target = Target(kind=kind, base_url=TARGET, model="m")
    body: Any
    if kind == "openai_compat":
        body = OpenAICompatAdapter(target, CLIENT).body(CONVERSATION, params, stream=True)
    elif kind == "tgi":
        body = TGIAdapter(target, CLIENT).body(CONVERSATION, params)
        assert len(body["parameters"].get("stop", [])) <= 4
    else:
        body = custom_api.standard_body([CONVERSATION], params)
    json.dumps(body, allow_nan=False)
