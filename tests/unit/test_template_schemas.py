"""core/templates.py without a database: JSON Schemas as form fields, values checked in plain
words, template definitions checked (schemas, kinds, placeholders, secrets), drafts built from
creation values, request schemas narrowing a kind's parameters, export and parse."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core import templates
from core.catalog import ValidationFailed
from core.inference.custom_api import PRESETS
from core.inference.local_gguf import BUNDLED
from core.templates import (
    DRAFT,
    FieldSpec,
    TemplateDefinition,
    TemplateView,
    build_drafts,
    builtins,
    check_values,
    describe_fields,
    export_template,
    fill,
    parse_template,
    prepare_values,
    request_params,
    validate_definition,
)

SCHEMA: dict[str, Any] = {
    "$schema": DRAFT,
    "type": "object",
    "required": ["api_key", "model", "region"],
    "properties": {
        "api_key": {"type": "string", "title": "API key"},
        "model": {"type": "string", "default": "small", "examples": ["small", "large"]},
        "region": {
            "type": "string",
            "enum": ["eu", "us"],
            "description": "Where the endpoint runs.",
        },
        "replicas": {"type": "integer", "minimum": 1, "maximum": 8, "default": 2},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "shards": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
        "verbose": {"type": "boolean", "default": True},
        "token": {"type": "string", "format": "password"},
        "endpoint": {"type": "string", "format": "uri"},
        "slug": {"type": "string", "pattern": "^[a-z-]+$", "minLength": 1, "maxLength": 20},
        "maybe": {"type": ["string", "null"]},
        "options": {"type": "object", "properties": {"a": {"type": "string"}}},
        "items": {"type": "array", "items": {"type": "string"}},
        "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "untyped": {"description": "no type at all"},
    },
}


def by_name(fields: list[FieldSpec]) -> dict[str, FieldSpec]:
    return {f.name: f for f in fields}


def definition(**kw: Any) -> TemplateDefinition:
    """A small valid template; keyword arguments replace its parts."""
    values: dict[str, Any] = {
        "name": "Acme",
        "kind": "openai_compat",
        "description": "Acme's chat API.",
        "fixed": {
            "base_url": "https://{region}.acme.test/v1",
            "auth_type": "bearer",
            "display_name": "{model} at {host}",
        },
        "creation_schema": {
            "type": "object",
            "required": ["api_key", "model", "region"],
            "properties": {
                "api_key": {"type": "string", "format": "password"},
                "model": {"type": "string", "minLength": 1},
                "region": {"type": "string", "enum": ["eu", "us"], "default": "eu"},
            },
        },
        "request_schema": {
            "type": "object",
            "properties": {
                "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.2},
                "max_tokens": {"type": "integer", "maximum": 4096},
            },
        },
    }
    values.update(kw)
    return TemplateDefinition(**values)


def view(d: TemplateDefinition, **kw: Any) -> TemplateView:
    return TemplateView(
        name=d.name,
        kind=d.kind,
        description=d.description,
        fixed=d.fixed,
        creation_schema=d.creation_schema,
        request_schema=d.request_schema,
        **kw,
    )


# --- a schema as form fields ------------------------------------------------------------------


def test_fields_follow_the_schema_order_with_widgets_defaults_and_required_marks() -> None:
    fields = describe_fields(SCHEMA)
    assert [f.name for f in fields] == list(SCHEMA["properties"])
    f = by_name(fields)
    assert (f["api_key"].widget, f["api_key"].required, f["api_key"].label) == (
        "password",
        True,
        "API key",
    )
    assert f["model"].widget == "text" and f["model"].default == "small"
    assert f["model"].placeholder == "e.g. small" and f["model"].label == "Model"
    assert f["region"].widget == "select" and f["region"].options == ("eu", "us")
    assert f["region"].help == "Where the endpoint runs." and f["region"].required
    assert f["replicas"].widget == "integer"
    assert (f["replicas"].minimum, f["replicas"].maximum, f["replicas"].default) == (1, 8, 2)
    assert f["verbose"].widget == "boolean" and f["verbose"].default is True
    assert f["token"].widget == "password" and f["token"].secret
    assert f["slug"].max_length == 20
    assert f["maybe"].widget == "text" and not f["maybe"].required  # ["string", "null"]


def test_exclusive_bounds_on_whole_numbers_become_the_next_whole_number() -> None:
    f = by_name(describe_fields(SCHEMA))
    assert (f["shards"].minimum, f["shards"].maximum) == (1, 9)
    # A widget cannot enforce "> 0" on a real number: the check on submit does.
    assert (f["ratio"].minimum, f["ratio"].maximum) == (None, 1)


def test_unsupported_properties_are_described_not_dropped() -> None:
    f = by_name(describe_fields(SCHEMA))
    assert f["options"].widget == "unsupported" and "is an object" in f["options"].problem
    assert "no nested fields" in f["options"].problem
    assert f["items"].widget == "unsupported" and "is a list" in f["items"].problem
    assert f["either"].widget == "unsupported" and "oneOf" in f["either"].problem
    assert f["untyped"].widget == "unsupported" and "has no type" in f["untyped"].problem


def test_a_secret_never_shows_a_default_or_an_example() -> None:
    schema = {
        "type": "object",
        "properties": {"api_key": {"type": "string", "default": "x", "examples": ["sk-1"]}},
    }
    [field] = describe_fields(schema)
    assert field.widget == "password" and field.default is None and field.placeholder == ""


def test_empty_or_odd_schemas_give_no_fields() -> None:
    assert describe_fields({}) == []
    assert describe_fields(None) == []
    assert describe_fields({"type": "object", "properties": []}) == []


# --- values, checked in plain words -----------------------------------------------------------


def test_missing_required_values_are_named_one_by_one() -> None:
    errors = check_values(SCHEMA, {})
    assert errors == {
        "api_key": "API key is required.",
        "model": "Model is required.",
        "region": "Region is required.",
    }


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"region": "mars"}, "region", "Region must be one of: eu, us (got 'mars')."),
        ({"replicas": 0}, "replicas", "Replicas must be ≥ 1 (got 0)."),
        ({"replicas": 9}, "replicas", "Replicas must be ≤ 8 (got 9)."),
        ({"replicas": 2.5}, "replicas", "Replicas must be a whole number."),
        ({"replicas": True}, "replicas", "Replicas must be a whole number."),
        ({"ratio": 0}, "ratio", "Ratio must be > 0 (got 0)."),
        ({"verbose": "yes"}, "verbose", "Verbose must be on or off."),
        ({"model": 3}, "model", "Model must be text."),
        (
            {"slug": "Not OK"},
            "slug",
            "Slug does not have the expected form (the pattern ^[a-z-]+$).",
        ),
        ({"slug": "a" * 21}, "slug", "Slug can have at most 20 characters."),
        ({"slug": ""}, "slug", "Slug cannot be empty."),
        (
            {"endpoint": "ftp://x"},
            "endpoint",
            "Endpoint: The URL must start with http:// or https://.",
        ),
        (
            {"endpoint": "http://"},
            "endpoint",
            "Endpoint: The URL must name a host, as in http://localhost:8080/v1.",
        ),
        ({"maybe": 1}, "maybe", "Maybe must be text or empty."),
    ],
)
def test_each_kind_of_problem_has_a_plain_sentence(
    values: dict[str, Any], field: str, message: str
) -> None:
    base = {"api_key": "k", "model": "m", "region": "eu"}
    assert check_values(SCHEMA, {**base, **values}) == {field: message}


def test_a_closed_schema_names_an_unknown_parameter() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": False,
    }
    assert check_values(schema, {"a": "x", "b": 1}) == {
        "b": "'b' is not a parameter of this template."
    }


def test_prepare_trims_drops_blanks_applies_defaults_and_makes_whole_floats_ints() -> None:
    clean, errors = prepare_values(
        SCHEMA,
        {"api_key": "  k  ", "model": "", "region": "us", "replicas": 3.0, "maybe": None},
    )
    assert errors == {}
    assert clean == {
        "api_key": "k",
        "model": "small",  # blank: the default
        "region": "us",
        "replicas": 3,
        "verbose": True,
    }
    assert isinstance(clean["replicas"], int)


def test_prepare_reports_a_blank_required_value_as_missing() -> None:
    _, errors = prepare_values(SCHEMA, {"api_key": "   ", "region": "eu"})
    assert errors == {"api_key": "API key is required."}


# --- template definitions ---------------------------------------------------------------------


def test_a_good_definition_has_no_problems() -> None:
    assert validate_definition(definition()) == {}


@pytest.mark.parametrize("key", list(builtins()))
def test_every_builtin_template_is_valid(key: str) -> None:
    assert validate_definition(builtins()[key].definition(), builtin=True) == {}


def test_unknown_kind_lists_the_known_ones() -> None:
    errors = validate_definition(definition(kind="carrier-pigeon"))
    assert errors["kind"].startswith("Unknown connection kind 'carrier-pigeon'. Plugboard knows:")
    assert "openai_compat (OpenAI-compatible)" in errors["kind"]


def test_builtin_names_are_reserved() -> None:
    assert "built-in template" in validate_definition(definition(name="openai"))["name"]
    assert "built-in template" in validate_definition(definition(name="OLLAMA"))["name"]
    assert validate_definition(definition(name="  "))["name"] == "Give the template a name."


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ([], "must be a JSON object"),
        ({"type": "array"}, 'type must be "object"'),
        ({"$schema": "http://json-schema.org/draft-07/schema#"}, "Only JSON Schema draft 2020-12"),
        (
            {"type": "object", "required": ["ghost"], "properties": {}},
            "'ghost' is listed as required",
        ),
        (
            {"type": "object", "properties": {"x": {"type": "string", "minLength": "one"}}},
            "Not a valid JSON Schema at properties → x → minLength",
        ),
    ],
)
def test_a_broken_creation_schema_says_what_is_wrong(schema: Any, message: str) -> None:
    errors = validate_definition(definition(creation_schema=schema))
    assert message in errors["creation_schema"], errors


def test_nested_and_unsupported_creation_parameters_are_refused_by_name() -> None:
    schema = {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "region": {"type": "string"},
            "api_key": {"type": "string"},
            "limits": {"type": "object"},
            "weird": {"type": "strin"},
            "bad-name": {"type": "string"},
        },
    }
    errors = validate_definition(definition(creation_schema=schema))
    assert "is an object" in errors["creation_schema.limits"]
    assert "has type 'strin'" in errors["creation_schema.weird"]
    assert "letters, digits and _ only" in errors["creation_schema.bad-name"]


def test_a_default_must_fit_its_own_property() -> None:
    schema = {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "region": {"type": "string", "enum": ["eu"], "default": "us"},
            "api_key": {"type": "string"},
        },
    }
    errors = validate_definition(definition(creation_schema=schema))
    assert errors["creation_schema.region"] == (
        "The default does not fit: Region must be one of: eu (got 'us')."
    )


def test_mapped_parameters_must_have_the_right_type() -> None:
    d = definition()
    d.creation_schema["properties"]["context_length"] = {"type": "string"}
    errors = validate_definition(d)
    assert (
        "fills the card's context_length, so it must be a whole number"
        in errors["creation_schema.context_length"]
    )


def test_unused_creation_parameters_are_pointed_out() -> None:
    d = definition()
    d.creation_schema["properties"]["team"] = {"type": "string"}
    assert "'team' is not used" in validate_definition(d)["creation_schema.team"]
    d.fixed["extra_headers"] = {"X-Team": "{team}"}
    assert validate_definition(d) == {}


def test_placeholders_must_name_creation_parameters() -> None:
    d = definition(fixed={"base_url": "https://{zone}.acme.test/v1", "auth_type": "bearer"})
    errors = validate_definition(d)
    assert errors["fixed.base_url"].startswith("{zone} is not a creation parameter")
    # {host} is the endpoint's host: usable in names, not in the endpoint itself.
    d = definition(fixed={"base_url": "https://{host}/v1", "auth_type": "bearer"})
    assert "{host} is not a creation parameter" in validate_definition(d)["fixed.base_url"]


def test_the_api_key_cannot_be_written_anywhere_but_the_key() -> None:
    d = definition()
    d.fixed["extra_headers"] = {"X-Key": "{api_key}"}
    assert (
        "{api_key} cannot be written into a setting"
        in validate_definition(d)["fixed.extra_headers"]
    )


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (
            lambda d: d.fixed.update(extra_headers={"Authorization": "Bearer abc"}),
            "fixed.extra_headers",
            "would keep a credential",
        ),
        (
            lambda d: d.fixed.update(extra_headers={"X-Note": "sk-proj-0123456789abcdefghij"}),
            "fixed.extra_headers.X-Note",
            "looks like an API key",
        ),
        (
            lambda d: d.fixed.update(description="token: hf_abcdefghijklmnopqrstuv"),
            "fixed.description",
            "looks like an API key",
        ),
        (
            lambda d: d.creation_schema["properties"]["api_key"].update(default="sk-whatever"),
            "creation_schema.api_key",
            "cannot have a default",
        ),
        (
            lambda d: d.creation_schema["properties"]["model"].update(format="password"),
            "creation_schema.model",
            "Only the parameter named api_key",
        ),
        (
            lambda d: d.fixed.update(
                settings={"request_expression": '{"auth": "Bearer abcdefghijklmnop"}'}
            ),
            "fixed.settings.request_expression",
            "looks like an API key",
        ),
    ],
)
def test_templates_never_hold_secrets(change: Any, where: str, message: str) -> None:
    d = definition()
    change(d)
    errors = validate_definition(d)
    assert message in errors.get(where, ""), errors


def test_words_joined_by_underscores_are_not_mistaken_for_keys() -> None:
    d = definition(kind="custom_api", request_schema={})
    d.fixed["settings"] = {
        "response_expression": "[choices.message.content & usage.token_count_per_request]",
        "request_expression": '{"api_version": "api_version_2024_01_01_beta"}',
    }
    assert validate_definition(d) == {}


@pytest.mark.parametrize(
    ("fixed", "where", "message"),
    [
        (
            {"base_url": "http://x/v1", "auth_type": "bearer", "colour": "red"},
            "fixed",
            "Unknown fixed setting(s): colour",
        ),
        (
            {"base_url": "http://x/v1", "auth_type": "magic"},
            "fixed.auth_type",
            "auth_type must be one of",
        ),
        (
            {"base_url": "http://x/v1", "auth_type": "none"},
            "fixed.auth_type",
            "asks for an API key but auth_type is none",
        ),
        (
            {"base_url": "http://x/v1", "auth_type": "bearer", "context_length": 0},
            "fixed.context_length",
            "whole number of tokens",
        ),
        (
            {"base_url": "http://x/v1", "auth_type": "bearer", "read_timeout": 9000},
            "fixed.read_timeout",
            "between 0 and 3600",
        ),
        (
            {"base_url": "http://x/v1", "auth_type": "bearer", "tags": "a,b"},
            "fixed.tags",
            "list of texts",
        ),
        ({"auth_type": "bearer"}, "fixed.base_url", "Give the endpoint"),
    ],
)
def test_fixed_settings_are_checked(fixed: dict[str, Any], where: str, message: str) -> None:
    d = definition(fixed=fixed)
    d.creation_schema["properties"].pop("region")
    d.creation_schema["required"].remove("region")
    assert message in validate_definition(d).get(where, ""), validate_definition(d)


def test_kind_rules_apply_to_fixed_settings() -> None:
    d = definition(kind="custom_api", request_schema={})
    d.fixed["settings"] = {"request_expression": "{ broken", "batch_size": 0}
    errors = validate_definition(d)
    assert "settings" in " ".join(errors)
    assert errors["fixed.settings.batch_size"].startswith("Batch size must be between 1")
    assert "fixed.settings.request_expression" in errors
    d.fixed["settings"] = {"chat_template": "klingon"}
    assert (
        "Unknown chat template 'klingon'" in validate_definition(d)["fixed.settings.chat_template"]
    )


def test_a_model_name_is_needed_where_the_kind_needs_one() -> None:
    d = definition()
    d.creation_schema["properties"].pop("model")
    d.creation_schema["required"].remove("model")
    d.fixed["display_name"] = "Acme"
    assert "need a model name" in validate_definition(d)["fixed.remote_model"]
    d.fixed["remote_model"] = "acme-large"
    assert validate_definition(d) == {}


# --- request schemas --------------------------------------------------------------------------


def test_request_schema_offers_and_narrows_the_kinds_parameters() -> None:
    params = request_params(definition())
    assert [p.name for p in params] == ["temperature", "max_tokens"]
    temperature, max_tokens = params
    assert (temperature.minimum, temperature.maximum, temperature.default) == (0, 1, 0.2)
    assert temperature.label == "Temperature"  # the kind's own label when the schema has none
    assert (max_tokens.minimum, max_tokens.maximum) == (1, 4096)  # kind's minimum kept
    assert temperature.check(1.5) == "Temperature must be ≥ 0 and ≤ 1 (got 1.5)."


def test_an_empty_request_schema_offers_everything_the_kind_accepts() -> None:
    from core.inference import tgi

    assert request_params(definition(kind="tgi", request_schema={})) == tgi.SPEC.params


@pytest.mark.parametrize(
    ("prop", "message"),
    [
        (
            {"temperature": {"type": "number", "maximum": 3}},
            "can only be narrowed: the kind's own range is ≥ 0 and ≤ 2",
        ),
        (
            {"temperature": {"type": "string"}},
            "Temperature is a number for this kind, not 'string'",
        ),
        ({"temperature": {"minimum": 0.9, "maximum": 0.1}}, "the minimum is above the maximum"),
        ({"temperature": {"default": 5}}, "Temperature must be ≥ 0 and ≤ 2 (got 5)"),
        (
            {"max_tokens": {"type": "integer", "maximum": 100, "default": 500}},
            "The default does not fit",
        ),
        (
            {"mirostat": {"type": "integer"}},
            "'mirostat' is not a parameter of OpenAI-compatible connections",
        ),
    ],
)
def test_request_schema_problems(prop: dict[str, Any], message: str) -> None:
    d = definition(request_schema={"type": "object", "properties": prop})
    errors = validate_definition(d)
    name = next(iter(prop))
    assert message in errors.get(f"request_schema.{name}", ""), errors


def test_tgi_exclusive_minimum_stays_exclusive() -> None:
    d = definition(kind="tgi", request_schema={"properties": {"temperature": {"minimum": 0}}})
    d.creation_schema["properties"].pop("model")
    d.creation_schema["required"].remove("model")
    d.fixed["display_name"] = "x"
    assert "can only be narrowed" in validate_definition(d)["request_schema.temperature"]
    d.request_schema = {"properties": {"temperature": {"exclusiveMinimum": 0, "maximum": 1.5}}}
    assert validate_definition(d) == {}


def test_check_request_uses_the_narrow_ranges() -> None:
    d = definition()
    assert templates.check_request(d, {"temperature": 0.5, "max_tokens": None}) == {}
    assert templates.check_request(d, {"temperature": 1.5}) == {
        "temperature": "Temperature must be ≤ 1 (got 1.5)."
    }


# --- building drafts --------------------------------------------------------------------------


def test_fill_substitutes_known_placeholders_and_keeps_types() -> None:
    values = {"region": "eu", "size": 8, "on": True}
    known = ["region", "size", "on"]
    assert fill("https://{region}.x/{other}", values, known) == "https://eu.x/{other}"
    assert fill("{size}", values, known) == 8  # a whole placeholder keeps the value's type
    assert fill({"a": ["{on}", "n={size}"]}, values, known) == {"a": [True, "n=8"]}
    assert fill('{"model": $model}', values, known) == '{"model": $model}'  # JSONata untouched


def test_drafts_from_values_with_mapping_and_placeholders() -> None:
    d = definition()
    d.fixed["extra_headers"] = {"X-Region": "{region}"}
    d.fixed["tags"] = ["acme", "{region}"]
    built = build_drafts(view(d, id=7), {"api_key": "k-1", "model": "large", "region": "us"})
    p, m = built.provider, built.model
    assert (p.kind, p.base_url, p.auth_type, p.api_key) == (
        "openai_compat",
        "https://us.acme.test/v1",
        "bearer",
        "k-1",
    )
    assert p.extra_headers == {"X-Region": "us"}
    assert (m.display_name, m.remote_model, m.tags) == (
        "large at us.acme.test",
        "large",
        ["acme", "us"],
    )
    assert m.default_params == {"temperature": 0.2}  # request schema defaults
    assert (m.template_id, m.template_name) == (7, "Acme")
    assert built.sources["base_url"] == "region" and built.sources["remote_model"] == "model"


def test_a_creation_value_wins_over_the_fixed_setting() -> None:
    d = definition()
    d.creation_schema["properties"]["display_name"] = {"type": "string"}
    values = {"api_key": "k", "model": "large", "region": "eu", "display_name": "Mine"}
    assert build_drafts(view(d), values).model.display_name == "Mine"
    values["display_name"] = ""
    assert build_drafts(view(d), values).model.display_name == "large at eu.acme.test"


def test_an_optional_key_left_empty_means_no_authentication() -> None:
    vllm = builtins()["vllm"]
    built = build_drafts(vllm, {"base_url": "http://127.0.0.1:8000/v1", "model": "m"})
    assert built.provider.auth_type == "none" and built.provider.api_key is None
    built = build_drafts(
        vllm, {"base_url": "http://127.0.0.1:8000/v1", "model": "m", "api_key": "k"}
    )
    assert built.provider.auth_type == "bearer" and built.provider.api_key == "k"


def test_builtin_databricks_and_local_drafts() -> None:
    db = build_drafts(
        builtins()["databricks"],
        {"workspace_url": "https://adb-1.azuredatabricks.net/", "endpoint": "dbrx", "api_key": "t"},
    )
    assert (
        db.provider.base_url
        == "https://adb-1.azuredatabricks.net/serving-endpoints/dbrx/invocations"
    )
    assert db.provider.settings["request_expression"] == PRESETS["databricks"].request_expression
    assert db.provider.settings["preset"] == "databricks"
    assert (db.model.display_name, db.model.remote_model) == ("dbrx (Databricks)", "dbrx")
    assert db.sources["base_url"] == "workspace_url"

    local_values, errors = prepare_values(
        builtins()["local_gguf"].creation_schema, {"display_name": "Tiny"}
    )
    assert errors == {}
    local = build_drafts(builtins()["local_gguf"], local_values)
    assert (local.provider.base_url, local.provider.auth_type) == (BUNDLED, "none")
    assert local.provider.settings == {"chat_template": "plain"}
    assert local.model.context_length == 2048
    assert local.model.default_params == {"max_tokens": 256}


# --- export and parse -------------------------------------------------------------------------


def test_export_is_importable_json_with_a_version_mark() -> None:
    text = export_template(builtins()["openai"])
    data = json.loads(text)
    assert data["plugboard_template"] == 1 and data["name"] == "OpenAI"
    assert parse_template(text).to_dict() == builtins()["openai"].definition().to_dict()


def test_export_strips_anything_secret_that_slipped_in() -> None:
    d = definition()
    d.creation_schema["properties"]["api_key"]["default"] = "sk-live-abcdefghijklmnopqrst"
    d.fixed["extra_headers"] = {"Authorization": "Bearer abcdefghijklmnopq", "X-Team": "ml"}
    d.fixed["description"] = "uses key sk-live-abcdefghijklmnopqrst"
    text = export_template(d)
    assert "abcdefghijklmnop" not in text and "Bearer" not in text
    assert json.loads(text)["fixed"]["extra_headers"] == {"X-Team": "ml"}


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("{not json", "json", "This is not valid JSON: Expecting property name"),
        ("[1, 2]", "json", "A template is a JSON object"),
        ('{"name": "x", "kind": "tgi", "colour": 1}', "json", "Unknown field(s): colour"),
        ('{"plugboard_template": 9, "name": "x", "kind": "tgi"}', "json", "template format 9"),
        ('{"kind": "tgi"}', "name", "The template has no name."),
        ('{"name": 3, "kind": "tgi"}', "name", "name must be text."),
        ('{"name": "x", "kind": "tgi", "fixed": []}', "fixed", "fixed must be a JSON object."),
    ],
)
def test_parse_explains_bad_files(text: str, field: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_template(text)
    assert message in caught.value.errors[field], caught.value.errors


def test_parse_takes_bytes_and_refuses_non_utf8() -> None:
    assert parse_template(b'{"name": "x", "kind": "tgi"}').name == "x"
    with pytest.raises(ValidationFailed) as caught:
        parse_template(b"\xff\xfe{")
    assert caught.value.errors == {"json": "The file is not UTF-8 text."}
