"""core/inference/xinference.py: parse_spec and validate_spec on pasted JSON, model URIs,
what the server reports (GET /v1/models, /v1/models/{uid}), normalise_root, the kind's
settings, and the /v1/completions reader (chunked whole or in pieces, and garbage).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import example, given
from hypothesis import strategies as st

from core.inference import xinference
from core.inference.prompts import BUILTIN_TEMPLATES, StopFilter
from core.inference.target import Auth, Target
from core.inference.types import GenerationParams, InferenceError, Message, StreamEvent
from core.inference.xinference import (
    ABILITIES,
    MODEL_FORMATS,
    MODEL_HUBS,
    CustomLLM,
    KnownFamilies,
    SpecInvalid,
    XinferenceAdapter,
    XinferenceServer,
    normalise_root,
    parse_spec,
    validate_spec,
)
from core.settings import Timeouts
from tests.fuzz.server import Script, ScriptedServer
from tests.fuzz.strategies import (
    assert_events_well_typed,
    assert_plain_error,
    budget,
    deep_json,
    json_values,
    odd_text,
)
from tests.fuzz.test_fuzz_catalog import valid_urls
from tests.fuzz.test_fuzz_streams import (
    consume,
    cut_into_pieces,
    eols,
    garbage_scripts,
    mock_client,
    pieces,
    served,
    sse,
    text_of,
)

KEY = "sk-fuzz-0123456789abcdefghij"
CHAT = [Message("system", "Be brief."), Message("user", "Hi")]
KNOWN = KnownFamilies(
    names=frozenset({"qwen2.5-instruct", "mine"}),
    builtin=frozenset({"qwen2.5-instruct"}),
    tools=frozenset({"qwen2.5-instruct"}),
    vision=frozenset(),
    chat_templates=frozenset({"qwen2.5-instruct"}),
)


def either(typed: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(typed, typed, json_values)


uris = st.one_of(
    st.sampled_from(["/models/x", "file:///models/x", "C:\\models\\x", "models/x", "s3://b/x"]),
    odd_text,
    st.sampled_from(["http://[", "file://[::1", "//x", "file:"]),
)
raw_specs = st.fixed_dictionaries(
    {},
    optional={
        "model_format": either(st.sampled_from([*MODEL_FORMATS, "safetensors"])),
        "model_size_in_billions": either(
            st.one_of(st.integers(-1, 100), st.sampled_from(["0_5", "1_8", "7", "x", "nan"]))
        ),
        "quantizations": either(st.lists(st.sampled_from(["none", "4-bit", "Q4_K_M", ""]))),
        "quantization": either(st.sampled_from(["none", "Q4_K_M"])),
        "model_id": either(st.sampled_from(["Qwen/Qwen2.5-7B-Instruct", ""])),
        "model_uri": either(uris),
        "model_hub": either(st.sampled_from([*MODEL_HUBS, "gitlab"])),
        "model_file_name_template": either(st.sampled_from(["m-{quantization}.gguf", "m.gguf"])),
    },
)
templates = st.one_of(
    st.sampled_from([t.source for t in BUILTIN_TEMPLATES.values()]),
    st.sampled_from(["qwen2.5-instruct", "no such family", "{{ x ", "{% for %}"]),
    st.builds(lambda d: "{{ " + "(" * d + "1" + ")" * d + " }}", st.integers(150, 600)),
    odd_text,
)
definitions = st.fixed_dictionaries(
    {},
    optional={
        "version": either(st.sampled_from([1, 2, 3])),
        "model_name": either(st.sampled_from(["my-model", "mine", "has space", "a/b", ""])),
        "model_family": either(st.sampled_from(["qwen2.5-instruct", "custom", ""])),
        "model_lang": either(st.lists(st.sampled_from(["en", "zh", ""]))),
        "model_ability": either(st.lists(st.sampled_from([*ABILITIES, "sing"]))),
        "model_description": either(odd_text),
        "context_length": either(st.integers(-1, 10**6)),
        "model_specs": either(st.lists(raw_specs, max_size=3)),
        "chat_template": either(templates),
        "prompt_style": either(
            st.one_of(
                st.sampled_from(["qwen", ""]),
                st.fixed_dictionaries({"style_name": either(st.just("qwen"))}),
            )
        ),
        "stop": either(st.lists(odd_text, max_size=2)),
        "stop_token_ids": either(st.lists(st.integers(0, 10**6), max_size=3)),
    },
)
pasted = st.one_of(
    definitions,
    definitions.map(json.dumps),
    definitions.map(lambda d: {"model": json.dumps(d), "persist": True}),  # a registration body
    json_values,
    odd_text,
    deep_json.map(lambda b: b.decode()),
)


@budget(350)
@given(pasted, st.booleans())
@example({"model_name": "m", "stop_token_ids": 5}, False)  # iterated an int: TypeError
@example({"model_name": "m", "chat_template": "{{ " + "(" * 300 + "1" + ")" * 300 + " }}"}, False)
@example({"model_specs": [{"model_uri": "http://["}]}, False)  # urlparse raised ValueError
@example("[" * 100_000, False)  # RecursionError from json.loads
def test_a_pasted_definition_parses_and_validates_or_says_why(value: Any, known: bool) -> None:
    try:
        model = parse_spec(value)
    except SpecInvalid as err:
        assert set(err.errors) == {"json"} and err.errors["json"].strip()
        return
    assert isinstance(model, CustomLLM)
    errors = validate_spec(model, KNOWN if known else None)
    assert isinstance(errors, dict)
    for key, message in errors.items():
        assert isinstance(key, str) and isinstance(message, str) and message.strip()
    xinference.spec_notes(model, KNOWN if known else None)
    if not errors:  # a definition the form would send: both schema versions serialise
        json.loads(model.to_json(2))
        json.loads(model.to_json(1))


@budget(300)
@given(uris)
def test_a_model_uri_check_gives_none_or_a_message(uri: str) -> None:
    problem = xinference._check_uri(uri)
    assert problem is None or (isinstance(problem, str) and problem.strip())


@budget(400)
@given(valid_urls)
@example("http://h/v1/v1")  # trimmed once: not idempotent
@example("http://v1")  # the host itself was cut: "http:/"
def test_normalise_root_is_idempotent_and_keeps_the_host(url: str) -> None:
    root = normalise_root(url)
    assert normalise_root(root) == root
    assert httpx.URL(root).host == httpx.URL(url).host
    assert httpx.URL(root).port == httpx.URL(url).port


@budget(200)
@given(st.dictionaries(st.sampled_from(["endpoint", "chat_template", "x"]), json_values))
def test_settings_rules_give_settings_messages(settings: dict[str, Any]) -> None:
    for key, message in xinference.validate_settings(settings).items():
        assert key.startswith("settings.") and message.strip()


# --- what the server says -------------------------------------------------------------------------

model_payloads = st.fixed_dictionaries(
    {},
    optional={
        "model_name": either(st.just("qwen")),
        "model_type": either(st.sampled_from(["LLM", "embedding"])),
        "model_ability": either(st.lists(st.sampled_from(["chat", "generate", "embed"]))),
        "model_lang": either(st.lists(st.just("en"))),
        "model_size_in_billions": either(st.sampled_from([7, "0_5"])),
        "context_length": either(st.integers(1, 10**5)),
        "replica": either(st.integers(1, 4)),
    },
)


@st.composite
def model_scripts(draw: st.DrawFn) -> Script:
    if draw(st.booleans()):
        return draw(garbage_scripts(stream=False))
    body = draw(
        st.one_of(
            model_payloads,
            st.builds(
                lambda ms: {"object": "list", "data": ms},
                st.lists(model_payloads.map(lambda m: {"id": "uid", **m}), max_size=3),
            ),
            st.dictionaries(st.sampled_from(["uid-1", "uid-2"]), model_payloads, max_size=2),
        )
    )
    return Script(200, "application/json", (json.dumps(body).encode(),), "length")


def target(base_url: str, **settings: Any) -> Target:
    return Target(
        kind="xinference",
        base_url=base_url,
        model="uid-1",
        auth=Auth("bearer", KEY),
        settings={"chat_template": "plain", **settings},
        timeouts=Timeouts(connect=2.0, read=5.0, write=5.0, pool=5.0),
        max_retries=0,
    )


@budget(200)
@given(model_scripts())
@example(Script(200, "application/json", (b'{"model_ability": 5}',), "length"))  # TypeError
def test_what_the_server_reports_about_models_parses_or_is_a_typed_error(
    scripted_server: ScriptedServer, fuzz_client: httpx.Client, script: Script
) -> None:
    server = XinferenceServer(target(scripted_server.root), fuzz_client)

    def both() -> None:
        for call in (lambda: [server.describe("uid-1")], server.running_models):
            try:
                models = call()
            except InferenceError as err:
                assert_plain_error(err)
                assert KEY not in err.message and KEY not in err.detail
            else:
                for model in models:
                    assert isinstance(model.summary, str)
                    assert all(isinstance(a, str) for a in model.abilities)

    served(scripted_server, script, both)


# --- /v1/completions ----------------------------------------------------------------------------


@st.composite
def completion_streams(draw: st.DrawFn) -> tuple[bytes, str]:
    texts = draw(st.lists(st.one_of(pieces, st.sampled_from(["User:", "\nUser", ":"])), max_size=8))
    chunks = [{"choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in texts]
    chunks.append({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
    if draw(st.booleans()):
        chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": -1}})
    ascii_only = draw(st.booleans())
    raw = sse([json.dumps(c, ensure_ascii=ascii_only) for c in chunks], draw(eols), True)
    return raw, StopFilter(BUILTIN_TEMPLATES["plain"].stop).apply("".join(texts))


@budget(250)
@given(completion_streams(), st.data())
def test_completion_stream_reads_the_same_however_it_is_chunked(
    stream: tuple[bytes, str], data: st.DataObject
) -> None:
    raw, shown = stream

    def events(chunks: list[bytes]) -> list[StreamEvent]:
        adapter = XinferenceAdapter(target("http://fuzz.test", endpoint="generate"), None)
        adapter.http.client = mock_client(chunks)
        got, err = consume(adapter.stream_chat(CHAT, GenerationParams()))
        assert err is None, err
        return got

    whole = events([raw])
    assert events(data.draw(cut_into_pieces(raw))) == whole
    assert text_of(whole) == shown
    assert_events_well_typed(whole)


@budget(200)
@given(garbage_scripts(stream=True), st.booleans())
@example(
    Script(200, "application/json", (b'{"choices": [{"text": "x", "finish_reason": [1]}]}',)),
    False,
)
def test_any_completion_reply_ends_in_events_or_a_typed_error(
    scripted_server: ScriptedServer, fuzz_client: httpx.Client, script: Script, stream: bool
) -> None:
    adapter = XinferenceAdapter(target(scripted_server.root, endpoint="generate"), fuzz_client)

    def run() -> None:
        if stream:
            events, _ = consume(adapter.stream_chat(CHAT, GenerationParams()))
            assert_events_well_typed(events)
            return
        try:
            reply = adapter.chat(CHAT, GenerationParams())
        except InferenceError as err:
            assert_plain_error(err)
        else:
            assert isinstance(reply.text, str)
            assert reply.finish_reason is None or isinstance(reply.finish_reason, str)

    served(scripted_server, script, run)
