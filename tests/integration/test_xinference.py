"""The Xinference kind against the protocol-faithful Xinference test server: registration
(v2, and v1 on an older server), launch with its loading phase, chat and generate by UID
(adapter and core.chat.stream_turn), terminate, unregister, auth, errors and test_connection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import catalog, chat
from core.catalog import ModelDraft, ProviderDraft
from core.inference.registry import make_adapter, spec_for
from core.inference.target import Auth, Target
from core.inference.types import (
    AuthFailed,
    BadRequest,
    Finish,
    GenerationParams,
    Message,
    NotFound,
    ServerError,
    StreamInterrupted,
    TextDelta,
    Usage,
)
from core.inference.xinference import (
    SPEC,
    CustomLLM,
    CustomLLMSpec,
    LaunchFailed,
    LaunchProgress,
    LaunchTimedOut,
    ModelLoading,
    ModelNotRunning,
    SpecInvalid,
    XinferenceAdapter,
    XinferenceServer,
    parse_spec,
    validate_spec,
)
from tests.conftest import free_port
from tests.servers.xinference_server import XinferenceTestServer

KEY = "sk-xinference-test-0123456789"
ASK = [Message("system", "Be brief."), Message("user", "Hello there")]


@pytest.fixture(scope="module")
def xinference_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def _server(xinference_port: int) -> Iterator[XinferenceTestServer]:
    server = XinferenceTestServer(port=xinference_port).start()
    yield server
    server.stop()


@pytest.fixture
def server(_server: XinferenceTestServer) -> Iterator[XinferenceTestServer]:
    _server.reset()
    yield _server
    _server.reset()


@pytest.fixture(scope="module")
def _old_server() -> Iterator[XinferenceTestServer]:
    server = XinferenceTestServer(schema=1, auth_route=False).start()
    yield server
    server.stop()


@pytest.fixture
def old_server(_old_server: XinferenceTestServer) -> Iterator[XinferenceTestServer]:
    """Before 1.8.0: v1 definitions only, no /v1/cluster/auth route."""
    _old_server.reset()
    yield _old_server
    _old_server.reset()


def admin(server: XinferenceTestServer, key: str | None = None) -> XinferenceServer:
    return XinferenceServer(server.url, api_key=key)


def adapter(
    server: XinferenceTestServer, uid: str, *, key: str | None = None, **settings: Any
) -> XinferenceAdapter:
    return XinferenceAdapter(
        Target(
            kind="xinference",
            base_url=server.url,
            model=uid,
            auth=Auth("bearer", key) if key else Auth(),
            settings={"chat_template": "plain", **settings},
            max_retries=0,
        )
    )


def form(name: str = "my-llm", **kw: Any) -> CustomLLM:
    values: dict[str, Any] = {
        "family": "my-family",
        "abilities": ["generate"],
        "specs": [CustomLLMSpec(size_in_billions=0.5, model_id="acme/my-llm-0.5b")],
    }
    return CustomLLM(name=name, **(values | kw))


def chat_form(name: str = "my-chat") -> CustomLLM:
    """A fine-tune of a built-in family: the server copies the family's template in."""
    return form(name, family="qwen2.5-instruct", abilities=["chat"])


def posts(server: XinferenceTestServer, path: str) -> list[dict[str, Any]]:
    return [r.json() for r in server.requests if r.method == "POST" and r.path.startswith(path)]


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def launched(server: XinferenceTestServer, model: CustomLLM, **launch: Any) -> str:
    srv = admin(server)
    srv.register(model)
    uid = srv.launch(model.name, "Transformers", **launch)
    srv.wait_until_ready(uid, min_wait=0, max_wait=0.01)
    return uid


# --- the kind ---------------------------------------------------------------------------------


def test_the_kind_is_registered_with_its_form_and_settings():
    spec = spec_for("xinference")
    assert spec is SPEC and spec.label == "Xinference"
    assert spec.model_label == "Model UID" and spec.needs_model and spec.lists_models
    assert spec.auth_types == ("none", "bearer") and spec.default_auth == "none"
    assert spec.settings_defaults == {"chat_template": "plain", "endpoint": "auto"}
    assert spec.settings_rules and spec.settings_rules({"endpoint": "embed"}) == {
        "settings.endpoint": "Endpoint must be auto, chat or generate (got 'embed')."
    }
    assert "top_k" in {p.name for p in spec.params}
    target = Target(kind="xinference", base_url="http://x:9997", model="m")
    assert isinstance(make_adapter(target), XinferenceAdapter)


# --- registration -----------------------------------------------------------------------------


def test_register_sends_the_v2_definition_as_a_json_string(server):
    model = form(
        specs=[
            CustomLLMSpec(size_in_billions=0.5, quantizations=["none", "8-bit"], model_id="acme/x")
        ]
    )
    srv = admin(server)
    assert srv.register(model, True) == 2

    body = posts(server, "/v1/model_registrations/LLM")[-1]
    assert isinstance(body["model"], str) and body["persist"] is True and body["worker_ip"] is None
    sent = json.loads(body["model"])
    assert sent["version"] == 2 and sent["model_family"] == "my-family"
    assert [(s["model_size_in_billions"], s["quantization"]) for s in sent["model_specs"]] == [
        ("0_5", "none"),
        ("0_5", "8-bit"),
    ]
    names = {m.name: m.is_builtin for m in srv.registered_models()}
    assert names["my-llm"] is False and names["qwen2.5-instruct"] is True
    assert srv.registration("my-llm")["version"] == 2

    srv.unregister("my-llm")
    assert "my-llm" not in {m.name for m in srv.registered_models()}
    with pytest.raises(BadRequest) as err:
        srv.unregister("my-llm")
    assert (
        str(err.value) == "Xinference could not unregister 'my-llm' (400): Model my-llm not found."
    )


def test_an_older_server_gets_v1_found_from_its_version(old_server):
    srv = admin(old_server)
    assert srv.version() == "1.7.1" and srv.schema_version() == 1
    model = form(
        specs=[
            CustomLLMSpec(size_in_billions=7, quantizations=["4-bit", "none"], model_id="acme/x")
        ]
    )
    assert srv.register(model) == 1

    bodies = posts(old_server, "/v1/model_registrations/LLM")
    assert len(bodies) == 1  # nothing was refused first
    sent = json.loads(bodies[0]["model"])
    assert sent["version"] == 1
    assert sent["model_specs"][0]["quantizations"] == ["4-bit", "none"]
    assert "quantization" not in sent["model_specs"][0]
    uid = srv.launch("my-llm", "transformers", 7, quantization="none")
    assert srv.wait_until_ready(uid, min_wait=0, max_wait=0.01).quantization == "none"


def test_without_a_version_route_the_registrations_tell_the_schema(old_server):
    old_server.version_route = False
    srv = admin(old_server)
    assert srv.version() is None
    assert srv.schema_version() == 1  # a built-in model's registration says "version": 1
    srv.register(form())
    assert json.loads(posts(old_server, "/v1/model_registrations/LLM")[-1]["model"])["version"] == 1


def test_an_older_server_that_refuses_version_2_gets_v1_and_it_is_remembered(old_server):
    old_server.version_route = False
    old_server.builtins = ()  # nothing to read the schema from
    srv = admin(old_server)
    assert srv.schema_version() is None
    assert srv.register(form("first")) == 1
    first, second = (json.loads(b["model"]) for b in posts(old_server, "/v1/model_registrations"))
    assert first["version"] == 2 and second["version"] == 1
    assert srv.register(form("second")) == 1
    assert json.loads(posts(old_server, "/v1/model_registrations")[-1]["model"])["version"] == 1
    assert len(posts(old_server, "/v1/model_registrations")) == 3


def test_an_explicit_schema_is_not_second_guessed(server):
    with pytest.raises(BadRequest) as err:
        admin(server).register(form(), schema=1)
    assert str(err.value) == (
        "Xinference could not register 'my-llm' (400): 2 validation errors for "
        "CustomLLMFamilyV2; version: unexpected value; permitted: 2 "
        "(type=value_error.const; given=1; permitted=(2,)); model_specs -> 0 -> quantization: "
        "field required (type=value_error.missing)"
    )
    assert err.value.status == 400 and "permitted: 2" in err.value.detail
    assert len(posts(server, "/v1/model_registrations")) == 1


def test_registering_a_name_twice_or_a_built_in_name(server):
    srv = admin(server)
    srv.register(form())
    with pytest.raises(BadRequest) as err:
        srv.register(form())
    assert (
        str(err.value)
        == "Xinference could not register 'my-llm' (400): Model my-llm already registered."
    )
    with pytest.raises(BadRequest) as err:
        srv.register(form("qwen2.5-instruct"))
    assert str(err.value).endswith(
        "(400): Model name conflicts with existing model qwen2.5-instruct."
    )
    # With the server's families, both are caught before anything is sent.
    known = srv.known_families()
    with pytest.raises(SpecInvalid) as invalid:
        srv.register(form("qwen2.5-instruct"), known=known)
    assert invalid.value.errors == {
        "name": "The server already has a model named 'qwen2.5-instruct' (built-in): pick another name."
    }


def test_known_families_come_from_the_detailed_listing(server):
    known = admin(server).known_families()
    assert known.tools == {"qwen2.5-instruct", "llama-3.1-instruct"}
    assert known.vision == {"qwen2-vl-instruct"}
    assert known.chat_templates == {"qwen2.5-instruct", "llama-3.1-instruct", "qwen2-vl-instruct"}
    assert "gpt-2" in known.builtin


def raw_register(server: XinferenceTestServer, definition: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/model_registrations/LLM",
        json={"model": json.dumps(definition), "worker_ip": None, "persist": False},
    )


# (form changes, our field, our words, what the server says or None when it accepts it)
RULES = [
    ({"name": "my model"}, "name", "Invalid model name 'my model'", "Invalid model name my model."),
    (
        {"name": "a/b"},
        "name",
        "cannot contain spaces or any of + / ? % # & =",
        "Invalid model name a/b.",
    ),
    (
        {"family": ""},
        "family",
        "requires a model family",
        "You must specify `model_family` when registering custom LLM models.",
    ),
    (
        {"abilities": ["chat", "tools"], "chat_template": "{{ messages }}"},
        "family",
        "Tool calling needs a built-in family that supports it, not 'my-family'",
        "`model_family` for tool call model must be one of the following values: \nqwen2.5-instruct, llama-3.1-instruct",
    ),
    (
        {"abilities": ["chat", "vision"], "chat_template": "{{ messages }}"},
        "family",
        "Vision needs a built-in family that supports it",
        "`model_family` for multimodal model must be one of the following values: \nqwen2-vl-instruct",
    ),
    (
        {"abilities": ["write"]},
        "abilities",
        "Unknown ability 'write'",
        "model_ability -> 0\n  unexpected value; permitted: 'embed', 'generate'",
    ),
    ({"context_length": 0}, "context_length", "whole number of tokens, 1 or more", None),
    ({"abilities": ["chat"]}, "chat_template", "A chat model needs a chat template", None),
    (
        {"abilities": ["chat"], "chat_template": "{% for m in messages %}"},
        "chat_template",
        "Template syntax error",
        None,
    ),
    (
        {"abilities": ["chat"], "chat_template": "my-family"},
        "chat_template",
        "'my-family' is not a built-in family with a chat template",
        None,
    ),
    ({"specs": []}, "specs", "Add at least one model spec", None),
    (
        {"specs": [CustomLLMSpec(model_format="onnx", model_id="a/b")]},
        "specs.0.model_format",
        "Unknown format 'onnx'",
        "No match for discriminator 'model_format' and value 'onnx'",
    ),
    (
        {"specs": [CustomLLMSpec(size_in_billions=0, model_id="a/b")]},
        "specs.0.size_in_billions",
        "must be a positive number",
        None,
    ),
    (
        {"specs": [CustomLLMSpec(quantizations=[], model_id="a/b")]},
        "specs.0.quantizations",
        "Give the quantization",
        None,
    ),
    ({"specs": [CustomLLMSpec()]}, "specs.0.model_id", "Give the model ID on the hub", None),
    (
        {"specs": [CustomLLMSpec(model_uri="models/mine")]},
        "specs.0.model_uri",
        "Model URI cannot be a relative path: models/mine",
        "Model URI cannot be a relative path: models/mine",
    ),
    (
        {"specs": [CustomLLMSpec(model_uri="https://example.com/w")]},
        "specs.0.model_uri",
        "loads a model URI from its own disk",
        None,
    ),
    (
        {"specs": [CustomLLMSpec(model_id="a/b", model_hub="github")]},
        "specs.0.model_hub",
        "Unknown hub 'github'",
        None,
    ),
    (
        {"specs": [CustomLLMSpec(model_format="ggufv2", quantizations=["q4_k_m"], model_id="a/b")]},
        "specs.0.model_file_name_template",
        "needs the file name template",
        "model_specs -> 0 -> model_file_name_template\n  field required",
    ),
    (
        {
            "specs": [
                CustomLLMSpec(
                    model_format="ggufv2",
                    quantizations=["q4_k_m", "q8_0"],
                    model_id="a/b",
                    model_file_name_template="m.gguf",
                )
            ]
        },
        "specs.0.model_file_name_template",
        "must contain {quantization}",
        None,
    ),
]


@pytest.mark.parametrize(
    ("change", "field", "ours", "theirs"), RULES, ids=[r[1] + ":" + r[2][:20] for r in RULES]
)
def test_every_rule_is_checked_before_sending_and_matches_the_server(
    server, change, field, ours, theirs
):
    model = form(**change)
    known = admin(server).known_families()
    errors = validate_spec(model, known)
    assert field in errors and ours in errors[field], errors
    assert list(errors) == [field]  # one rule at a time
    answer = raw_register(server, model.to_v2())
    if theirs is None:  # the server would take it and fail later (launch, chat)
        assert answer.status_code == 200, answer.text
    else:
        assert answer.status_code == 400 and theirs in answer.json()["detail"], answer.text
    with pytest.raises(SpecInvalid) as err:
        admin(server).register(model, known=known)
    assert err.value.errors == errors and ours in str(err.value)


def test_a_model_uri_on_the_servers_disk(server, tmp_path: Path):
    weights = tmp_path / "my-llm"
    weights.mkdir()
    srv = admin(server)
    srv.register(form(specs=[CustomLLMSpec(size_in_billions=1, model_uri=f"file://{weights}")]))
    missing = form("other", specs=[CustomLLMSpec(size_in_billions=1, model_uri="/nope/weights")])
    assert validate_spec(missing) == {}  # only the server can look at its disk
    with pytest.raises(BadRequest) as err:
        srv.register(missing)
    assert (
        str(err.value)
        == "Xinference could not register 'other' (400): Invalid model URI /nope/weights."
    )


def test_a_body_that_is_not_a_registration_request_is_a_plain_500(server):
    srv = admin(server)
    with pytest.raises(ServerError) as err:
        srv._call(
            "POST",
            "v1/model_registrations/LLM",
            {"model": form().to_v2(), "persist": False},  # an object, not a JSON string
            action="Xinference could not register 'my-llm'",
        )
    assert err.value.status == 500
    assert (
        "Internal Server Error: 1 validation error for RegisterModelRequest; model: str type expected"
        in str(err.value)
    )


# --- pasted JSON ------------------------------------------------------------------------------

SEED_EXAMPLE = {  # the docs' custom model (seed 003), a v1 definition
    "version": 1,
    "model_name": "nsql-2B",
    "model_lang": ["en"],
    "model_ability": ["generate"],
    "model_specs": [
        {
            "model_format": "pytorch",
            "model_size_in_billions": 2,
            "quantizations": ["4-bit", "8-bit", "none"],
            "model_id": "NumbersStation/nsql-2B",
        }
    ],
    "prompt_style": None,
}


def test_the_docs_v1_example_needs_a_family_then_registers_as_v2(server):
    model = parse_spec(json.dumps(SEED_EXAMPLE))
    assert validate_spec(model) == {"family": validate_spec(model)["family"]}
    model.family = "nsql"
    assert admin(server).register(model) == 2
    sent = json.loads(posts(server, "/v1/model_registrations")[-1]["model"])
    assert [s["quantization"] for s in sent["model_specs"]] == ["4-bit", "8-bit", "none"]
    assert {s["model_size_in_billions"] for s in sent["model_specs"]} == {2}


def test_pasted_v2_json_registers_on_an_older_server_as_v1(old_server, tmp_path: Path):
    weights = tmp_path / "Qwen2.5-0.5B"
    weights.mkdir()
    pasted = {  # protocols.md §3.2's example, pointing at a real directory
        "version": 2,
        "context_length": 32768,
        "model_name": "custom-qwen-2.5",
        "model_lang": ["en", "zh"],
        "model_ability": ["generate"],
        "model_description": "demo",
        "model_family": "my-custom-qwen-2.5",
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_size_in_billions": "0_5",
                "quantization": "none",
                "model_id": None,
                "model_hub": "huggingface",
                "model_uri": f"file://{weights}",
                "model_revision": None,
            }
        ],
        "chat_template": None,
        "stop_token_ids": None,
        "stop": None,
    }
    srv = admin(old_server)
    assert srv.register(json.dumps(pasted)) == 1
    sent = json.loads(posts(old_server, "/v1/model_registrations")[-1]["model"])
    assert sent["version"] == 1 and sent["context_length"] == 32768
    assert sent["model_specs"][0]["quantizations"] == ["none"]
    assert sent["model_specs"][0]["model_size_in_billions"] == "0_5"
    assert srv.registration("custom-qwen-2.5")["model_description"] == "demo"


def test_pasted_json_that_is_not_a_definition(server):
    with pytest.raises(SpecInvalid) as err:
        admin(server).register("{not json")
    assert list(err.value.errors) == ["json"] and "not valid JSON" in str(err.value)
    assert posts(server, "/v1/model_registrations") == []


# --- launch -----------------------------------------------------------------------------------


def test_launch_then_wait_through_the_loading_phase(server):
    server.loading_polls = 3
    srv = admin(server)
    srv.register(form())
    uid = srv.launch(
        "my-llm", "Transformers", 0.5, "pytorch", "none", extra={"gpu_memory_utilization": 0.9}
    )
    assert uid == "my-llm"
    launch = next(
        r for r in server.requests if r.method == "POST" and r.path.startswith("/v1/models")
    )
    assert launch.path == "/v1/models?wait_ready=false"
    body = launch.json()
    assert body["model_size_in_billions"] == "0_5" and "size_in_billions" not in body
    assert body["model_engine"] == "Transformers" and body["model_type"] == "LLM"
    assert server.instances[uid].engine_kwargs == {"gpu_memory_utilization": 0.9}
    assert [m.uid for m in srv.running_models()] == [uid]  # listed while it loads

    seen: list[LaunchProgress] = []
    ready = srv.wait_until_ready(uid, on_progress=seen.append, min_wait=0, max_wait=0.01)
    assert [p.polls for p in seen] == [1, 2, 3]
    assert all(p.retry_after == 30 and p.uid == uid for p in seen)  # bounded by max_wait
    assert seen[0].message.startswith(
        "Model is loading, please retry later: Model my-llm is launching"
    )
    assert seen[0].progress is not None and 0 <= seen[0].progress <= 1
    assert ready.abilities == ("generate",) and ready.size_in_billions == "0_5"
    assert ready.family == "my-family" and not ready.can_chat and ready.can_generate
    describes = [r for r in server.requests if r.method == "GET" and r.path == f"/v1/models/{uid}"]
    assert len(describes) == 4


def test_a_loading_phase_measured_in_time(server):
    server.loading_polls, server.loading_seconds = 0, 0.3
    srv = admin(server)
    uid = srv.launch("gpt-2", "transformers", 1.5)
    seen: list[LaunchProgress] = []
    assert (
        srv.wait_until_ready(uid, on_progress=seen.append, min_wait=0.02, max_wait=0.05).uid == uid
    )
    assert seen and seen[-1].polls == len(seen)


def test_launch_errors_keep_the_servers_words(server):
    srv = admin(server)
    with pytest.raises(BadRequest) as err:
        srv.launch("qwen2.5-instruct", "")
    assert str(err.value) == (
        "Xinference could not launch 'qwen2.5-instruct' (400): Invalid input. "
        "Please specify the `model_engine` field."
    )
    with pytest.raises(BadRequest) as err:
        srv.launch("nope", "vLLM")
    assert "Model not found, name: nope" in str(err.value)
    with pytest.raises(BadRequest) as err:
        srv.launch("qwen2.5-instruct", "MLX", 7, "ggufv2", "q4_k_m")
    assert str(err.value).endswith("(400): Model qwen2.5-instruct cannot be run on engine MLX.")
    with pytest.raises(BadRequest) as err:
        srv.launch("qwen2.5-instruct", "vLLM", "seven")
    assert "size must be a number" in str(err.value)
    srv.launch("qwen2.5-instruct", "llama.cpp", 7, "ggufv2", "q4_k_m", uid="q")
    with pytest.raises(BadRequest) as err:
        srv.launch("qwen2.5-instruct", "vLLM", uid="q")
    assert "Model is already in the model list, uid: q" in str(err.value)


def test_a_launch_that_fails_while_loading(server):
    server.fault("launch_fails", message="CUDA out of memory. Tried to allocate 2.00 GiB")
    srv = admin(server)
    uid = srv.launch("qwen2.5-instruct", "vLLM")
    with pytest.raises(LaunchFailed) as err:
        srv.wait_until_ready(uid, min_wait=0, max_wait=0.01)
    assert str(err.value) == (
        "The launch of 'qwen2.5-instruct' failed (500): Failed to launch model "
        "qwen2.5-instruct: CUDA out of memory. Tried to allocate 2.00 GiB."
    )
    assert srv.running_uids() == []


def test_waiting_gives_up_after_the_timeout_and_a_launch_can_be_cancelled(server):
    server.loading_polls = 10_000
    srv = admin(server)
    uid = srv.launch("qwen2.5-instruct", "vLLM")
    with pytest.raises(LaunchTimedOut) as err:
        srv.wait_until_ready(uid, timeout=0.05, min_wait=0.01, max_wait=0.01)
    assert "still loading after 0.05 s" in str(err.value)
    srv.cancel_launch(uid)
    assert srv.running_uids() == []


def test_terminate(server):
    srv = admin(server)
    uid = server.launch_ready("qwen2.5-instruct")
    srv.terminate(uid)
    assert srv.running_uids() == []
    with pytest.raises(ModelNotRunning) as err:
        srv.terminate(uid)
    assert str(err.value) == (
        "'qwen2.5-instruct' is not running on the Xinference server. No model is running "
        "there: launch one first. Use the UID of a running model (Launch gives it)."
    )


# --- chat and generate by UID -----------------------------------------------------------------


def test_a_chat_model_streams_through_chat_completions_despite_the_sse_quirks(server):
    uid = launched(server, chat_form())
    server.ping = True
    events = list(adapter(server, uid).stream_chat(ASK, GenerationParams(max_tokens=10)))
    assert text_of(events) == "Echo: Hello there"
    assert Finish("stop") in events and Usage(4, 3) in events
    sent = server.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.json()["model"] == uid
    assert sent.json()["messages"][0] == {"role": "system", "content": "Be brief."}
    assert server.custom["my-chat"]["chat_template"].startswith("{% for message in messages %}")


def test_a_chat_model_without_streaming(server):
    uid = launched(server, chat_form())
    reply = adapter(server, uid).chat(ASK, GenerationParams(max_tokens=2))
    assert reply.text == "Echo: Hello" and reply.finish_reason == "length"
    assert reply.usage == Usage(4, 2)


def test_a_generate_model_goes_through_completions_with_the_cards_template(server):
    uid = launched(server, form())
    server.ping = True
    events = list(
        adapter(server, uid, chat_template="chatml").stream_chat(
            ASK, GenerationParams(max_tokens=20, extra={"top_k": 5})
        )
    )
    assert text_of(events) == " Paris is the capital of France."
    assert events[-1] == Finish("stop") and Usage(None, 6) != events[-2]
    sent = server.requests[-1].json()
    assert server.requests[-1].path == "/v1/completions"
    assert sent["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert sent["prompt"].endswith("<|im_start|>assistant\n")
    assert sent["stop"] == ["<|im_end|>"] and sent["top_k"] == 5 and sent["stream"] is True


def test_generate_drops_template_markers_an_engine_keeps(server):
    uid = launched(server, form())
    server.ignore_stop = True
    server.completion_reply = " Madrid.\nUser: and France?"
    reply = adapter(server, uid).chat(ASK, GenerationParams())
    assert reply.text == " Madrid." and reply.finish_reason == "stop"
    assert server.requests[-1].json()["stop"] == ["\nUser:", "User:"]
    events = list(adapter(server, uid).stream_chat(ASK, GenerationParams()))
    assert text_of(events) == " Madrid." and events[-1] == Finish("stop")


def test_the_endpoint_setting_can_force_completions(server):
    uid = server.launch_ready("qwen2.5-instruct")
    adapter(server, uid, endpoint="generate").chat(ASK, GenerationParams(max_tokens=3))
    assert server.requests[-1].path == "/v1/completions"
    assert not any(r.path.startswith(f"/v1/models/{uid}") for r in server.requests)


@pytest.mark.parametrize("model", [chat_form(), form()], ids=["chat", "generate"])
def test_an_error_inside_the_stream_keeps_what_arrived(server, model):
    uid = launched(server, model)
    server.fault("error_event", after=2, message="CUDA error: device-side assert triggered")
    events: list = []
    with pytest.raises(ServerError) as err:
        for event in adapter(server, uid).stream_chat(ASK, GenerationParams()):
            events.append(event)
    assert str(err.value) == (
        "The model stopped with an error mid-reply: CUDA error: device-side assert triggered"
    )
    assert len([e for e in events if isinstance(e, TextDelta)]) == 2


def test_a_completion_stream_that_ends_without_a_finish_reason(server):
    uid = launched(server, form())
    server.fault("truncated", after=3)
    with pytest.raises(StreamInterrupted) as err:
        list(adapter(server, uid).stream_chat(ASK, GenerationParams()))
    assert "before the server said it was finished" in str(err.value)
    server.fault("cut", after=1)
    with pytest.raises(StreamInterrupted):
        list(adapter(server, uid).stream_chat(ASK, GenerationParams()))


def test_a_model_still_loading_is_reported_at_once(server):
    uid = admin(server).launch("qwen2.5-instruct", "vLLM")
    with pytest.raises(ModelLoading) as err:
        adapter(server, uid).chat(ASK, GenerationParams())
    assert str(err.value) == (
        "'qwen2.5-instruct' is still loading on the Xinference server (it suggests trying again "
        "in 30 s). Send again when it is ready; launching a large model can take minutes."
    )
    assert err.value.retry_after == 30 and err.value.retryable
    assert not any(r.path == "/v1/chat/completions" for r in server.requests)


def test_an_unknown_or_stopped_uid(server):
    uid = server.launch_ready("qwen2.5-instruct")
    with pytest.raises(ModelNotRunning) as err:
        adapter(server, "ghost").chat(ASK, GenerationParams())
    assert str(err.value).startswith(
        "'ghost' is not running on the Xinference server. Running now: qwen2.5-instruct."
    )
    live = adapter(server, uid)
    live.chat(ASK, GenerationParams(max_tokens=1))
    admin(server).terminate(uid)
    with pytest.raises(ModelNotRunning) as err:  # the chat route's 404, in the same words
        live.chat(ASK, GenerationParams(max_tokens=1))
    assert err.value.status == 404 and "Model not found in the model list" in err.value.detail


def test_server_refusals_inside_inference_are_plain(server):
    uid = server.launch_ready("qwen2.5-instruct")
    with pytest.raises(ServerError) as err:
        adapter(server, uid).chat(ASK, GenerationParams(extra={"logit_bias": {"42": 5}}))
    assert str(err.value) == (
        "Xinference does not support a parameter that was sent (501): Not implemented. "
        "Remove it (logit_bias, for example) and try again."
    )
    with pytest.raises(ServerError) as err:
        adapter(server, uid).chat(ASK, GenerationParams(temperature=3.0))
    assert "ensure this value is less than or equal to 2" in str(err.value)
    gpt2 = server.launch_ready("gpt-2")
    with pytest.raises(BadRequest) as err:
        adapter(server, gpt2, endpoint="chat").chat(ASK, GenerationParams())
    assert "Model gpt-2 is not for chat." in str(err.value)


def test_an_embedding_model_cannot_chat(server):
    uid = launched(server, form("embedder", abilities=["embed"]))
    with pytest.raises(BadRequest) as err:
        adapter(server, uid).chat(ASK, GenerationParams())
    assert str(err.value) == (
        "'embedder' cannot write text: its abilities are embed. "
        "Pick the UID of a chat or generate model."
    )


def test_a_bare_404_is_a_missing_route_not_a_missing_model(server):
    with pytest.raises(ModelNotRunning):
        admin(server).describe("m")
    other = XinferenceServer(f"{server.url}/elsewhere")
    err = other._explain(
        NotFound("x", status=404, detail='HTTP 404 Not Found\n{"detail": "Not Found"}'),
        "Describing 'm'",
    )
    assert str(err) == (
        f"Describing 'm': the server has no such route (404). Is {server.url}/elsewhere an "
        "Xinference server (the root address, without /v1), and recent enough?"
    )


def test_list_remote_models_gives_running_uids(server):
    server.launch_ready("qwen2.5-instruct", uid="a")
    server.launch_ready("gpt-2", uid="b")
    assert adapter(server, "a").list_remote_models() == ["a", "b"]


# --- auth -------------------------------------------------------------------------------------


def test_auth_on_and_off(server, old_server):
    assert admin(server).auth_required() is False
    assert admin(old_server).auth_required() is False  # no /v1/cluster/auth: an older server
    server.api_key = KEY
    assert admin(server).auth_required() is True
    with pytest.raises(AuthFailed) as err:
        admin(server).running_models()
    assert str(err.value) == (
        "Listing the running models: the Xinference server rejected the API key (401): "
        "Not authenticated. Check the API key (Bearer) of the connection."
    )
    with pytest.raises(AuthFailed) as err:
        admin(server, "sk-wrong").registered_models()
    assert "Could not validate credentials" in str(err.value)
    srv = admin(server, KEY)
    srv.register(form())
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    uid = server.launch_ready("qwen2.5-instruct")
    assert adapter(server, uid, key=KEY).chat(ASK, GenerationParams(max_tokens=1)).text == "Echo:"
    assert srv.version() == "1.9.1"


# --- test_connection --------------------------------------------------------------------------


def layers(report) -> list[tuple[str, bool]]:
    return [(s.layer, s.ok) for s in report.steps]


def test_connection_passes_every_layer(server):
    uid = launched(server, form())
    report = adapter(server, uid).test_connection()
    assert report.ok, report.summary
    assert layers(report) == [
        ("DNS", True),
        ("Connection", True),
        ("Authentication", True),
        ("Model", True),
        ("Chat request", True),
    ]
    assert report.remote_models == [uid]
    assert "Replies use /v1/completions" in report.steps[3].message
    assert "my-llm, pytorch 0.5B none, generate, 2048-token context" in report.steps[3].message


def test_connection_names_the_failing_layer(server):
    def failed(report):
        return report.steps[-1].layer, report.steps[-1].message

    dns = XinferenceAdapter(
        Target(kind="xinference", base_url="http://no-such-host.invalid:9997", model="m")
    )
    assert failed(dns.test_connection())[0] == "DNS"
    closed = XinferenceAdapter(
        Target(
            kind="xinference", base_url=f"http://127.0.0.1:{free_port()}", model="m", max_retries=0
        )
    )
    assert failed(closed.test_connection())[0] == "Connection"

    layer, message = failed(adapter(server, "").test_connection())
    assert (
        layer == "Model"
        and message == "Enter the UID of a running model. Running: none (launch one first)."
    )
    server.launch_ready("gpt-2")
    layer, message = failed(adapter(server, "ghost").test_connection())
    assert (
        layer == "Model"
        and "'ghost' is not running" in message
        and "Running now: gpt-2." in message
    )
    loading = admin(server).launch("qwen2.5-instruct", "vLLM")
    layer, message = failed(adapter(server, loading).test_connection())
    assert layer == "Model" and "still loading" in message

    server.fault("status", status=500, detail="Model actor is out of memory")
    layer, message = failed(adapter(server, "gpt-2").test_connection())
    assert layer == "Chat request" and "Model actor is out of memory" in message

    server.api_key = KEY
    layer, message = failed(adapter(server, "gpt-2").test_connection())
    assert layer == "Authentication" and "requires an API key" in message
    layer, message = failed(adapter(server, "gpt-2", key="sk-wrong").test_connection())
    assert layer == "Authentication" and "Could not validate credentials" in message
    assert adapter(server, "gpt-2", key=KEY).test_connection().ok


# --- through the catalog and core.chat ---------------------------------------------------------


def test_stream_turn_with_a_catalog_card(server, workspace):
    chat_uid = launched(server, chat_form())
    gen_uid = launched(server, form())
    loading_uid = admin(server).launch("llama-3.1-instruct", "vLLM")
    cards = {
        uid: catalog.add_custom_model(
            workspace,
            ProviderDraft(
                name=f"Xinference {uid}",
                kind="xinference",
                base_url=server.url + "/v1",  # a pasted /v1 is fine
                auth_type="none",
                settings={"chat_template": "llama3"},
            ),
            ModelDraft(
                display_name=f"Card {uid}", remote_model=uid, default_params={"max_tokens": 50}
            ),
        )
        for uid in (chat_uid, gen_uid, loading_uid)
    }

    pieces: list[str] = []
    result = None
    for event in chat.stream_turn(
        workspace, chat.TurnRequest(model_id=cards[chat_uid].id, prompt="Hi")
    ):
        if isinstance(event, TextDelta):
            pieces.append(event.text)
        else:
            result = event
    assert result and result.status == "ok" and result.text == "Echo: Hi" == "".join(pieces)

    result = chat.collect(
        chat.stream_turn(workspace, chat.TurnRequest(model_id=cards[gen_uid].id, prompt="Capital?"))
    )
    assert result.status == "ok" and result.text == " Paris is the capital of France."
    assert server.requests[-1].json()["prompt"].startswith("<|start_header_id|>user")

    result = chat.collect(
        chat.stream_turn(workspace, chat.TurnRequest(model_id=cards[loading_uid].id, prompt="Hi"))
    )
    assert result.status == "error" and result.error is not None
    assert "'llama-3.1-instruct' is still loading" in result.error.message
