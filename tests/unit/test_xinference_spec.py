"""The Xinference custom-model form: v2/v1 JSON, pasted JSON, and the rules (no network)."""

from __future__ import annotations

import json

import pytest

from core.inference.types import BadRequest, InferenceError
from core.inference.xinference import (
    CustomLLM,
    CustomLLMSpec,
    KnownFamilies,
    RunningModel,
    SpecInvalid,
    _permitted_version,
    _schema_from_version,
    engines_for,
    normalise_root,
    parse_spec,
    server_said,
    size_label,
    size_to_wire,
    size_value,
    spec_notes,
    validate_spec,
)

KNOWN = KnownFamilies(
    names=frozenset({"qwen2.5-instruct", "qwen2-vl-instruct", "gpt-2", "mine"}),
    builtin=frozenset({"qwen2.5-instruct", "qwen2-vl-instruct", "gpt-2"}),
    tools=frozenset({"qwen2.5-instruct"}),
    vision=frozenset({"qwen2-vl-instruct"}),
    chat_templates=frozenset({"qwen2.5-instruct", "qwen2-vl-instruct"}),
)


def model(**kw) -> CustomLLM:
    values = {
        "name": "my-llm",
        "family": "my-family",
        "specs": [CustomLLMSpec(size_in_billions=7, model_id="acme/my-llm")],
    }
    return CustomLLM(**(values | kw))


@pytest.mark.parametrize(
    ("size", "wire", "value", "label"),
    [
        (7, 7, 7.0, "7B"),
        (7.0, 7, 7.0, "7B"),
        (0.5, "0_5", 0.5, "0.5B"),
        ("0_5", "0_5", 0.5, "0.5B"),
        ("1.8", "1_8", 1.8, "1.8B"),
        ("14", 14, 14.0, "14B"),
        ("big", "big", None, "big"),
    ],
)
def test_sizes_like_the_xinference_client(size, wire, value, label):
    assert size_to_wire(size) == wire
    assert size_value(size) == value
    assert size_label(size) == label
    assert size_value(True) is None


def test_v2_has_one_quantization_per_spec():
    m = model(
        languages=["en", "zh"],
        abilities=["chat"],
        description="  A fine-tune.  ",
        context_length=32768,
        chat_template="qwen2.5-instruct",
        specs=[
            CustomLLMSpec(size_in_billions=0.5, quantizations=["none", "8-bit"], model_id="a/b"),
            CustomLLMSpec(
                model_format="ggufv2",
                size_in_billions=7,
                quantizations=["q4_k_m"],
                model_uri="file:///models/gguf",
                model_file_name_template="m-{quantization}.gguf",
            ),
        ],
    )
    assert m.to_v2() == {
        "version": 2,
        "context_length": 32768,
        "model_name": "my-llm",
        "model_lang": ["en", "zh"],
        "model_ability": ["chat"],
        "model_description": "A fine-tune.",
        "model_family": "my-family",
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_size_in_billions": "0_5",
                "quantization": "none",
                "model_id": "a/b",
                "model_hub": "huggingface",
                "model_uri": None,
                "model_revision": None,
            },
            {
                "model_format": "pytorch",
                "model_size_in_billions": "0_5",
                "quantization": "8-bit",
                "model_id": "a/b",
                "model_hub": "huggingface",
                "model_uri": None,
                "model_revision": None,
            },
            {
                "model_format": "ggufv2",
                "model_size_in_billions": 7,
                "quantization": "q4_k_m",
                "model_id": None,
                "model_hub": "huggingface",
                "model_uri": "file:///models/gguf",
                "model_revision": None,
                "model_file_name_template": "m-{quantization}.gguf",
            },
        ],
        "chat_template": "qwen2.5-instruct",
        "stop_token_ids": None,
        "stop": None,
    }
    assert json.loads(m.to_json()) == m.to_v2()


def test_v1_keeps_quantization_lists_and_names_a_prompt_style():
    m = model(
        abilities=["chat"],
        chat_template="llama-2-chat",
        specs=[CustomLLMSpec(quantizations=["4-bit", "none"], model_id="a/b")],
    )
    v1 = m.to_v1()
    assert v1["version"] == 1
    assert v1["model_specs"] == [
        {
            "model_format": "pytorch",
            "model_size_in_billions": 7,
            "quantizations": ["4-bit", "none"],
            "model_id": "a/b",
            "model_hub": "huggingface",
            "model_uri": None,
            "model_revision": None,
        }
    ]
    assert v1["chat_template"] == v1["prompt_style"] == "llama-2-chat"
    jinja = model(abilities=["chat"], chat_template="{{ messages[0].content }}").to_v1()
    assert jinja["chat_template"] == "{{ messages[0].content }}" and jinja["prompt_style"] is None
    assert json.loads(m.to_json(1)) == v1


@pytest.mark.parametrize("version", [1, 2])
def test_parse_spec_reads_back_both_versions(version):
    m = model(
        abilities=["chat", "tools"],
        family="qwen2.5-instruct",
        chat_template="{% for m in messages %}{{ m.content }}{% endfor %}",
        stop=["<|im_end|>"],
        stop_token_ids=[151645],
        context_length=4096,
        specs=[
            CustomLLMSpec(size_in_billions="0_5", quantizations=["none", "8-bit"], model_id="a/b"),
            CustomLLMSpec(size_in_billions=7, quantizations=["none"], model_uri="/models/x"),
        ],
        extra={"reasoning_start_tag": "<think>"},
    )
    assert parse_spec(m.to_json(version)) == m
    unset = model(context_length=None)  # left out: the server's default applies
    assert "context_length" not in unset.to_dict(version)
    assert parse_spec(unset.to_json(version)).context_length == 2048


def test_parse_spec_keeps_keys_it_does_not_model_and_unwraps_a_registration_body():
    definition = model().to_v2()
    definition["architectures"] = ["Qwen2ForCausalLM"]
    definition["model_specs"][0]["activated_size_in_billions"] = 3
    body = {"model": json.dumps(definition), "worker_ip": None, "persist": True}
    parsed = parse_spec(body)
    assert parsed.extra == {"architectures": ["Qwen2ForCausalLM"]}
    assert parsed.specs[0].extra == {"activated_size_in_billions": 3}
    assert parsed.to_v2() == definition


def test_parse_spec_reads_an_old_prompt_style():
    old = {
        "version": 1,
        "model_name": "vicuna-custom",
        "model_lang": ["en"],
        "model_ability": ["chat"],
        "model_family": "other",
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_size_in_billions": 7,
                "quantizations": ["none"],
                "model_id": "lmsys/vicuna-7b-v1.5",
            }
        ],
        "prompt_style": {
            "style_name": "ADD_COLON_TWO",
            "system_prompt": "A chat.",
            "roles": ["USER", "ASSISTANT"],
            "intra_message_sep": " ",
            "inter_message_sep": "</s>",
            "stop": ["</s>"],
            "stop_token_ids": [2],
        },
    }
    parsed = parse_spec(old)
    assert parsed.chat_template == "ADD_COLON_TWO"
    assert parsed.stop == ["</s>"] and parsed.stop_token_ids == [2]
    assert parse_spec({**old, "prompt_style": "vicuna-v1.5"}).chat_template == "vicuna-v1.5"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{nope", "This is not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"version": 3, "model_name": "x"}', "Unknown schema version 3"),
        ('{"model_name": "x", "model_specs": {}}', "model_specs must be a list"),
        ('{"model_name": "x", "model_specs": [1]}', "Each entry of model_specs"),
    ],
)
def test_parse_spec_explains_what_is_not_a_definition(text, says):
    with pytest.raises(SpecInvalid) as err:
        parse_spec(text)
    assert list(err.value.errors) == ["json"] and says in err.value.errors["json"]
    assert isinstance(err.value, BadRequest) and isinstance(err.value, InferenceError)


def test_a_valid_definition_has_no_problems():
    assert validate_spec(model()) == {}
    assert validate_spec(model(), KNOWN) == {}
    chat = model(name="q", family="qwen2.5-instruct", abilities=["chat", "tools"])
    assert validate_spec(chat, KNOWN) == {}  # the family's template is used
    assert (
        validate_spec(
            model(name="v", family="qwen2-vl-instruct", abilities=["chat", "vision"]), KNOWN
        )
        == {}
    )


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"name": ""}, "name", "Give the model a name."),
        ({"name": "a b"}, "name", "cannot contain spaces or any of + / ? % # & ="),
        ({"name": "a#b"}, "name", "Invalid model name 'a#b'"),
        ({"name": "gpt-2"}, "name", "already has a model named 'gpt-2' (built-in)"),
        ({"name": "mine"}, "name", "already has a model named 'mine' (registered)"),
        ({"languages": ["en", " "]}, "languages", "remove the empty entry"),
        ({"abilities": []}, "abilities", "Choose at least one ability"),
        ({"abilities": ["generate", "sing"]}, "abilities", "Unknown ability 'sing'"),
        ({"family": "  "}, "family", "requires a model family"),
        (
            {"abilities": ["chat", "tools"], "chat_template": "{{ x }}"},
            "family",
            "Tool calling needs",
        ),
        ({"abilities": ["chat", "vision"], "chat_template": "{{ x }}"}, "family", "Vision needs"),
        ({"abilities": ["chat"]}, "chat_template", "A chat model needs a chat template"),
        ({"chat_template": "{% if %}"}, "chat_template", "Template syntax error on line 1"),
        ({"chat_template": "two words"}, "chat_template", "neither a Jinja template"),
        (
            {"chat_template": "my-family"},
            "chat_template",
            "not a built-in family with a chat template",
        ),
        ({"context_length": 0}, "context_length", "1 or more"),
        ({"context_length": "4k"}, "context_length", "1 or more"),
        ({"specs": []}, "specs", "Add at least one model spec"),
    ],
)
def test_each_rule_names_its_field(change, field, says):
    errors = validate_spec(model(**change), KNOWN)
    assert list(errors) == [field] and says in errors[field], errors


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        (
            CustomLLMSpec(model_format="onnx", model_id="a/b"),
            "model_format",
            "Unknown format 'onnx'",
        ),
        (CustomLLMSpec(size_in_billions=-1, model_id="a/b"), "size_in_billions", "positive number"),
        (
            CustomLLMSpec(size_in_billions="seven", model_id="a/b"),
            "size_in_billions",
            "e.g. 7 or 0.5",
        ),
        (
            CustomLLMSpec(quantizations=[], model_id="a/b"),
            "quantizations",
            '"none" for unquantized',
        ),
        (
            CustomLLMSpec(quantizations=[""], model_id="a/b"),
            "quantizations",
            "Give the quantization",
        ),
        (CustomLLMSpec(), "model_id", "model ID on the hub"),
        (CustomLLMSpec(model_uri="weights/x"), "model_uri", "cannot be a relative path"),
        (CustomLLMSpec(model_uri="file://weights/x"), "model_uri", "cannot be a relative path"),
        (CustomLLMSpec(model_uri="s3://bucket/x"), "model_uri", "not s3://"),
        (CustomLLMSpec(model_id="a/b", model_hub="hf"), "model_hub", "Unknown hub 'hf'"),
        (
            CustomLLMSpec(model_format="ggufv2", model_id="a/b"),
            "model_file_name_template",
            "needs the file name template",
        ),
        (
            CustomLLMSpec(
                model_format="ggufv2",
                quantizations=["q4", "q8"],
                model_id="a/b",
                model_file_name_template="x.gguf",
            ),
            "model_file_name_template",
            "must contain {quantization}",
        ),
    ],
)
def test_each_spec_rule_names_its_field(spec, field, says):
    errors = validate_spec(model(specs=[CustomLLMSpec(model_id="ok/ok"), spec]))
    assert list(errors) == [f"specs.1.{field}"] and says in errors[f"specs.1.{field}"], errors


@pytest.mark.parametrize("uri", ["file:///models/x", "/models/x", "C:\\models\\x", "D:/models"])
def test_absolute_paths_are_fine_here_and_checked_on_the_server(uri):
    m = model(specs=[CustomLLMSpec(model_uri=uri)])
    assert validate_spec(m) == {}
    assert "The server checks that each model URI exists on its own disk." in spec_notes(m)


def test_without_the_servers_families_those_rules_are_left_to_it():
    m = model(name="gpt-2", abilities=["chat", "tools"])
    assert validate_spec(m) == {}
    notes = spec_notes(m)
    assert any("checked by the server" in n for n in notes)
    assert any("uses the template of the family 'my-family'" in n for n in notes)
    assert spec_notes(m, KNOWN) == []


def test_known_families_from_a_detailed_listing():
    listing = [
        {
            "model_name": "qwen2.5-instruct",
            "is_builtin": True,
            "model_ability": ["chat", "tools"],
            "chat_template": "{{x}}",
        },
        {
            "model_name": "qwen2-vl-instruct",
            "is_builtin": True,
            "model_ability": ["chat", "vision"],
            "chat_template": "{{x}}",
        },
        {
            "model_name": "baichuan",
            "is_builtin": True,
            "model_ability": ["chat"],
            "prompt_style": {"style_name": "NO_COLON_TWO"},
        },
        {
            "model_name": "gpt-2",
            "is_builtin": True,
            "model_ability": ["generate"],
            "chat_template": None,
        },
        {
            "model_name": "mine",
            "is_builtin": False,
            "model_ability": ["chat", "tools"],
            "chat_template": "{{x}}",
        },
        {"is_builtin": True},
    ]
    known = KnownFamilies.from_registrations(listing)
    assert known.names == {"qwen2.5-instruct", "qwen2-vl-instruct", "baichuan", "gpt-2", "mine"}
    assert known.builtin == known.names - {"mine"}
    assert known.tools == {"qwen2.5-instruct"} and known.vision == {"qwen2-vl-instruct"}
    assert known.chat_templates == {"qwen2.5-instruct", "qwen2-vl-instruct", "baichuan"}


@pytest.mark.parametrize(
    ("version", "schema"),
    [
        ("1.9.1", 2),
        ("v1.8.0", 2),
        ("3.4.1.dev0+g99868ea70.d20260911", 2),
        ("1.7.1", 1),
        ("0.14.4", 1),
        ("dev", None),
        (None, None),
    ],
)
def test_schema_from_the_server_version(version, schema):
    assert _schema_from_version(version) == schema


def test_the_version_a_server_asks_for_when_it_refuses_ours():
    body = json.dumps(
        {
            "detail": "2 validation errors for CustomLLMFamilyV1\nversion\n  unexpected value; permitted: 1 (type=value_error.const; given=2; permitted=(1,))\nmodel_specs -> 0 -> quantizations\n  field required (type=value_error.missing)"
        }
    )
    err = BadRequest("x", status=400, detail=f"HTTP 400 Bad Request from POST u\n{body}")
    assert server_said(err) == (
        "2 validation errors for CustomLLMFamilyV1; version: unexpected value; permitted: 1 "
        "(type=value_error.const; given=2; permitted=(1,)); model_specs -> 0 -> quantizations: "
        "field required (type=value_error.missing)"
    )
    assert _permitted_version(err) == 1
    other = BadRequest("x", status=400, detail='HTTP 400\n{"detail": "Model x already registered"}')
    assert _permitted_version(other) is None and server_said(other) == "Model x already registered."


@pytest.mark.parametrize(
    "url",
    [
        "http://h:9997",
        "http://h:9997/",
        "http://h:9997/v1",
        "http://h:9997/v1/chat/completions",
        " http://h:9997/v1/models ",
    ],
)
def test_the_base_url_is_the_server_root(url):
    assert normalise_root(url) == "http://h:9997"


def test_running_model_from_a_description():
    m = RunningModel.from_payload(
        "q1",
        {
            "model_type": "LLM",
            "model_name": "qwen2.5-instruct",
            "model_ability": ["chat", "tools"],
            "model_format": "ggufv2",
            "model_size_in_billions": 7,
            "quantization": "q4_k_m",
            "context_length": 32768,
            "model_family": "qwen2.5-instruct",
            "model_lang": ["en", "zh"],
            "replica": 1,
        },
    )
    assert m.can_chat and not m.can_generate and m.languages == ("en", "zh")
    assert m.summary == "qwen2.5-instruct, ggufv2 7B q4_k_m, chat + tools, 32768-token context"
    assert RunningModel.from_payload("x", {}).summary == "x"


def test_engines_for_each_format():
    assert engines_for("ggufv2") == ("llama.cpp", "vLLM")
    assert engines_for("mlx") == ("MLX",)
    assert "Transformers" in engines_for("pytorch") and "llama.cpp" not in engines_for("awq")
