"""The TGI adapter against the protocol-faithful TGI test server, and the OpenAI-compatible
adapter against TGI's Messages API (/v1/chat/completions, model "tgi")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.inference.openai_compat import OpenAICompatAdapter
from core.inference.target import Auth, Target
from core.inference.tgi import SPEC, TGIAdapter
from core.inference.types import (
    AuthFailed,
    BadRequest,
    Details,
    Finish,
    GenerationParams,
    Message,
    RateLimited,
    ServerError,
    StreamInterrupted,
    TextDelta,
    Usage,
)
from tests.servers.tgi_server import TGITestServer

ASK = [Message("system", "Be brief."), Message("user", "What is deep learning?")]


@pytest.fixture(scope="module")
def _server() -> Iterator[TGITestServer]:
    server = TGITestServer().start()
    yield server
    server.stop()


@pytest.fixture
def server(_server: TGITestServer) -> TGITestServer:
    _server.reset()
    return _server


def adapter(
    server: TGITestServer, *, model: str = "", template: str = "plain", key: str | None = None
) -> TGIAdapter:
    auth = Auth("bearer", key) if key else Auth()
    return TGIAdapter(
        Target(
            kind="tgi",
            base_url=server.url + "/",
            model=model,
            auth=auth,
            settings={"chat_template": template},
            max_retries=0,
        )
    )


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_every_seed_parameter_reaches_the_server_under_its_tgi_name(server):
    values = {
        "do_sample": True,
        "max_tokens": 20,
        "repetition_penalty": 1.03,
        "return_full_text": False,
        "seed": 42,
        "stop": ["photographer"],
        "temperature": 0.5,
        "top_k": 10,
        "top_p": 0.95,
        "truncate": 100,
        "typical_p": 0.95,
        "best_of": 1,
        "watermark": True,
        "details": True,
        "decoder_input_details": True,
        "stream": False,
    }
    assert SPEC.check_params(values) == {}
    reply = adapter(server, model="llama-2-13b-chat").chat(ASK, GenerationParams.from_dict(values))

    sent = server.requests[-1]
    assert sent.path == "/generate"
    body = sent.json()
    assert body["model"] == "llama-2-13b-chat"  # DataCrunch needs it; TGI ignores it
    expected = {k: v for k, v in values.items() if k not in ("max_tokens", "stream")}
    expected["max_new_tokens"] = 20
    expected["stop"] = ["photographer", "\nUser:", "User:"]  # the template's markers join
    assert body["parameters"] == expected
    assert reply.details and reply.details["seed"] == 42 and reply.details["prefill"]


def test_no_model_field_when_the_card_has_none(server):
    adapter(server).chat(ASK, GenerationParams(max_tokens=2))
    assert "model" not in server.requests[-1].json()


def test_streaming_reads_tgi_sse_without_done_and_with_keepalive(server):
    server.keepalive = True
    events = list(
        adapter(server, template="chatml").stream_chat(
            ASK, GenerationParams(max_tokens=50, extra={"details": True})
        )
    )

    assert (
        text_of(events)
        == "Deep learning is a kind of machine learning that uses neural networks with many layers."
    )
    assert "</s>" not in text_of(events)  # special tokens are not text
    details = next(e for e in events if isinstance(e, Details)).data
    assert details["finish_reason"] == "eos_token" and len(details["tokens"]) == 16
    assert Usage(details["input_length"], 16) in events
    assert events[-1] == Finish("stop")
    assert server.requests[-1].path == "/generate_stream"
    assert (
        server.requests[-1].json()["inputs"].startswith("<|im_start|>system\nBe brief.<|im_end|>")
    )


def test_stop_sequence_is_kept_by_tgi_but_template_markers_are_dropped(server):
    server.reply = "Paris is the capital. User: next question"
    events = list(adapter(server).stream_chat(ASK, GenerationParams(max_tokens=50)))
    assert text_of(events) == "Paris is the capital. "
    server.reply = "It is photographer work and more"
    reply = adapter(server).chat(
        ASK, GenerationParams(max_tokens=50, stop=("photographer",), extra={"details": True})
    )
    assert reply.text == "It is photographer" and reply.finish_reason == "stop_sequence"


def test_max_new_tokens_ends_with_length(server):
    events = list(
        adapter(server).stream_chat(ASK, GenerationParams(max_tokens=3, extra={"details": True}))
    )
    assert text_of(events) == "Deep learning is"
    assert events[-1] == Finish("length")


def test_validation_error_on_generate_is_a_clear_bad_request(server):
    with pytest.raises(BadRequest) as err:
        adapter(server).chat(ASK, GenerationParams(temperature=0.0))
    assert "`temperature` must be strictly positive" in str(err.value)
    assert err.value.status == 422


def test_validation_error_inside_a_200_stream(server):
    with pytest.raises(BadRequest) as err:
        list(adapter(server).stream_chat(ASK, GenerationParams(top_p=1.0)))
    assert (
        str(err.value)
        == "TGI refused the request: Input validation error: `top_p` must be > 0.0 and < 1.0"
    )


def test_our_rules_match_tgis(server):
    """Each rule we check before sending is one TGI itself enforces (same server answers)."""
    cases = [
        (
            {"best_of": 2, "stream": True, "do_sample": True},
            "best_of",
            "`best_of` != 1 is not supported when streaming tokens",
        ),
        ({"best_of": 2, "stream": False}, "best_of", "you must use sampling when `best_of` is > 1"),
        (
            {"best_of": 2, "stream": False, "do_sample": True, "seed": 1},
            "seed",
            "`seed` must not be set when `best_of` > 1",
        ),
        (
            {"decoder_input_details": True, "stream": True},
            "decoder_input_details",
            "not supported when streaming tokens",
        ),
    ]
    for values, field, tgi_says in cases:
        assert field in SPEC.check_params(values), values
        params = GenerationParams.from_dict(values)
        with pytest.raises(BadRequest) as err:
            list(adapter(server).stream_chat(ASK, params))
        assert tgi_says in str(err.value)


def test_range_rules(server):
    assert "top_p" in SPEC.check_params({"top_p": 1.0})
    assert "typical_p" in SPEC.check_params({"typical_p": 0})
    assert "temperature" in SPEC.check_params({"temperature": 0})
    assert "top_k" in SPEC.check_params({"top_k": 0})
    assert "stop" in SPEC.check_params({"stop": ["a", "b", "c", "d", "e"]})
    assert SPEC.check_params({"temperature": 0.01, "top_p": 0.99}) == {}


def test_generation_error_mid_stream_keeps_what_arrived(server):
    server.fault("error_event", after=3)
    events: list = []
    with pytest.raises(ServerError) as err:
        for event in adapter(server).stream_chat(ASK, GenerationParams()):
            events.append(event)
    assert text_of(events) == "Deep learning is"
    assert "CUDA out of memory" in str(err.value)


def test_cut_stream_is_reported(server):
    server.fault("cut", after=2)
    with pytest.raises(StreamInterrupted):
        list(adapter(server).stream_chat(ASK, GenerationParams()))


def test_424_and_429(server):
    server.fault("status", status=424, error="Request failed during generation: shard died")
    with pytest.raises(ServerError) as err:
        adapter(server).chat(ASK, GenerationParams())
    assert "(424)" in str(err.value) and "shard died" in str(err.value)
    server.fault("overloaded")
    with pytest.raises(RateLimited) as err:
        adapter(server).chat(ASK, GenerationParams())
    assert "Model is overloaded" in str(err.value)


def test_api_key_is_sent_and_a_wrong_one_is_named(server):
    server.api_key = "hf_TestTokenForTGI1234567890"
    adapter(server, key="hf_TestTokenForTGI1234567890").chat(ASK, GenerationParams(max_tokens=1))
    assert server.requests[-1].headers["authorization"] == "Bearer hf_TestTokenForTGI1234567890"
    with pytest.raises(AuthFailed) as err:
        adapter(server, key="hf_wrong").chat(ASK, GenerationParams(max_tokens=1))
    assert "rejected the API key (401)" in str(err.value)


def test_test_connection_reports_info_and_names_what_failed(server):
    report = adapter(server).test_connection()
    assert report.ok
    assert report.info["max_total_tokens"] == 2048
    assert "up to 1024 input and 2048 total tokens" in report.steps[2].message

    server.api_key = "hf_needed_here_000000000000"
    report = adapter(server).test_connection()
    assert not report.ok and report.steps[-1].layer == "Authentication"

    dead = TGIAdapter(
        Target(kind="tgi", base_url="http://127.0.0.1:9", max_retries=0)
    ).test_connection()
    assert dead.steps[-1].layer == "Connection"


# --- TGI's Messages API through the OpenAI-compatible adapter -----------------------------------


def messages_api(server: TGITestServer) -> OpenAICompatAdapter:
    return OpenAICompatAdapter(
        Target(kind="openai_compat", base_url=server.url + "/v1", model="tgi", max_retries=0)
    )


def test_messages_api_streams_despite_tgi_quirks(server):
    events = list(messages_api(server).stream_chat(ASK, GenerationParams(max_tokens=4)))
    assert text_of(events) == "Deep learning is a"
    assert Finish("length") in events
    assert any(isinstance(e, Usage) and e.completion_tokens == 4 for e in events)
    sent = server.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.json()["model"] == "tgi"


def test_messages_api_error_inside_the_200_stream(server):
    with pytest.raises(BadRequest) as err:
        list(messages_api(server).stream_chat(ASK, GenerationParams(top_p=1.0)))
    assert "`top_p` must be > 0.0 and < 1.0" in str(err.value)


def test_messages_api_non_streaming(server):
    reply = messages_api(server).chat(ASK, GenerationParams(max_tokens=2))
    assert reply.text == "Deep learning" and reply.finish_reason == "length"
    assert messages_api(server).list_remote_models() == ["meta-llama/Llama-3.1-8B-Instruct"]
