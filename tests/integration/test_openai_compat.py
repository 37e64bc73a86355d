"""The OpenAI-compatible adapter over real HTTP against the protocol-faithful test server.

Every test talks to a server on 127.0.0.1 and checks what the adapter produced (events,
typed errors and their plain-words messages) and what the server received (paths, bodies,
number of requests for the retry rules).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from core.inference import openai_compat
from core.inference.http import make_client
from core.inference.openai_compat import OpenAICompatAdapter, normalise_base_url
from core.inference.target import Auth, Target
from core.inference.types import (
    AuthFailed,
    BadRequest,
    BadResponse,
    ConnectionFailed,
    Finish,
    GenerationParams,
    InferenceError,
    Message,
    NotFound,
    RateLimited,
    RequestTimedOut,
    ServerError,
    StreamEvent,
    StreamInterrupted,
    TextDelta,
    Usage,
)
from core.settings import Timeouts
from tests.conftest import free_port
from tests.servers import base
from tests.servers.base import Handler, Recorded
from tests.servers.openai_server import OpenAITestServer

PROMPT = [Message("user", "hello there world")]
ECHO = "Echo: hello there world"
KEY = "sk-live-4fQ9zR2mXw7LpK3vT8nB6yJ1"  # the person's secret: never in a message or detail


@pytest.fixture(autouse=True)
def _forget_server_quirks() -> Iterator[None]:
    """The adapter remembers per base URL that a server rejected stream_options/max_tokens;
    every test here starts from a server it has never seen."""
    openai_compat._quirks.clear()
    yield
    openai_compat._quirks.clear()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    c = make_client()
    yield c
    c.close()


Make = Callable[..., OpenAICompatAdapter]


@pytest.fixture
def make(openai_server: OpenAITestServer, client: httpx.Client) -> Make:
    def factory(base_url: str | None = None, **kw: Any) -> OpenAICompatAdapter:
        kw.setdefault("model", "test-model")
        target = Target(kind="openai_compat", base_url=base_url or openai_server.url, **kw)
        return OpenAICompatAdapter(target, client)

    return factory


def run(
    adapter: OpenAICompatAdapter,
    params: GenerationParams | None = None,
    messages: list[Message] | None = None,
) -> tuple[list[StreamEvent], InferenceError | None]:
    """Stream to the end; the events that arrived and the error that ended it, if any."""
    events: list[StreamEvent] = []
    try:
        for event in adapter.stream_chat(messages or PROMPT, params or GenerationParams()):
            events.append(event)
    except InferenceError as exc:
        return events, exc
    return events, None


def text(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def of(events: list[StreamEvent], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def raw_stream(url: str, body: dict[str, Any]) -> list[str]:
    """The lines of a streamed reply as they are on the wire (to check a quirk is in effect)."""
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=10) as response:
        return list(response.iter_lines())


@contextmanager
def retry_log() -> Iterator[list[logging.LogRecord]]:
    """The "retrying …" lines the HTTP seam logs before each new attempt."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("retrying"):
                records.append(record)

    logger = logging.getLogger("plugboard.http")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def chat_requests(server: base.TestHTTPServer) -> list[Recorded]:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


# --- streaming and non-streaming text ------------------------------------------------------------


def test_streamed_reply_arrives_word_by_word_with_usage(
    make: Make, openai_server: OpenAITestServer
) -> None:
    events, err = run(make())
    assert err is None
    deltas = of(events, TextDelta)
    assert [d.text for d in deltas] == ["Echo:", " hello", " there", " world"]
    assert of(events, Finish) == [Finish("stop")]
    assert of(events, Usage) == [Usage(prompt_tokens=7, completion_tokens=4)]

    [request] = openai_server.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("Plugboard/")
    assert request.json() == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "hello there world"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_generation_params_are_sent_and_length_is_reported(
    make: Make, openai_server: OpenAITestServer
) -> None:
    params = GenerationParams(
        temperature=0.3,
        max_tokens=2,
        top_p=0.9,
        stop=("\n\n", "END"),
        seed=42,
        extra={"presence_penalty": 0.5, "frequency_penalty": 0.25},
    )
    messages = [
        Message("system", "Be brief."),
        Message("user", "first question"),
        Message("assistant", "first answer"),
        Message("user", "hello there world"),
    ]
    events, err = run(make(), params, messages)
    assert err is None
    assert text(events) == "Echo: hello"
    assert of(events, Finish) == [Finish("length")]
    body = openai_server.requests[0].json()
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "hello there world"},
    ]
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 2
    assert "max_completion_tokens" not in body
    assert body["top_p"] == 0.9
    assert body["stop"] == ["\n\n", "END"]
    assert body["seed"] == 42
    assert body["presence_penalty"] == 0.5
    assert body["frequency_penalty"] == 0.25


def test_non_streamed_reply(make: Make, openai_server: OpenAITestServer) -> None:
    reply = make().chat(PROMPT, GenerationParams(temperature=0))
    assert reply.text == ECHO
    assert reply.finish_reason == "stop"
    assert reply.usage == Usage(7, 4)
    body = openai_server.requests[0].json()
    assert body["stream"] is False
    assert "stream_options" not in body  # only allowed when streaming
    assert body["temperature"] == 0


def test_non_streamed_reply_cut_by_max_tokens(make: Make) -> None:
    reply = make().chat(PROMPT, GenerationParams(max_tokens=3))
    assert reply.text == "Echo: hello there"
    assert reply.finish_reason == "length"
    assert reply.usage == Usage(7, 3)


def test_usage_absent_when_the_server_sends_none(
    make: Make, openai_server: OpenAITestServer
) -> None:
    openai_server.no_usage = True
    events, err = run(make())
    assert err is None
    assert text(events) == ECHO
    assert of(events, Usage) == []
    assert of(events, Finish) == [Finish("stop")]


def test_usage_only_final_chunk_with_empty_choices(
    make: Make, openai_server: OpenAITestServer
) -> None:
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
    lines = raw_stream(
        openai_server.url, {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data:")]
    assert data[-1] == "[DONE]"
    last = json.loads(data[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 2  # on the wire

    events, err = run(make(), messages=[Message("user", "hi")])
    assert err is None
    assert text(events) == "Echo: hi"
    assert events[-1] == Usage(prompt_tokens=5, completion_tokens=2)


@pytest.mark.parametrize(
    ("quirk", "on_the_wire"),
    [("no_space", "data:{"), ("keepalive", ": ping")],
)
def test_sse_variants_give_the_same_reply(
    make: Make, openai_server: OpenAITestServer, quirk: str, on_the_wire: str
) -> None:
    setattr(openai_server, quirk, True)
    body = {"model": "test-model", "messages": [{"role": "user", "content": "x"}], "stream": True}
    assert any(line.startswith(on_the_wire) for line in raw_stream(openai_server.url, body))
    openai_server.reset()
    setattr(openai_server, quirk, True)

    events, err = run(make())
    assert err is None
    assert [e.text for e in of(events, TextDelta)] == ["Echo:", " hello", " there", " world"]
    assert of(events, Finish) == [Finish("stop")]
    assert of(events, Usage) == [Usage(7, 4)]


def test_empty_reply(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault("empty")
    events, err = run(make())
    assert err is None
    assert of(events, TextDelta) == []
    assert of(events, Finish) == [Finish("stop")]
    assert of(events, Usage) == [Usage(7, 0)]

    openai_server.fault("empty")
    reply = make().chat(PROMPT, GenerationParams())
    assert reply.text == ""
    assert reply.finish_reason == "stop"


def test_server_that_ignores_stream_true_still_gives_the_reply(
    make: Make, openai_server: OpenAITestServer
) -> None:
    openai_server.fault("ignore_stream")
    events, err = run(make())
    assert err is None
    assert events == [TextDelta(ECHO), Usage(7, 4), Finish("stop")]
    assert openai_server.requests[0].json()["stream"] is True


def test_large_reply_non_streamed(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault("large", size=5_000_000)
    reply = make().chat(PROMPT, GenerationParams())
    assert len(reply.text) > 4_900_000
    assert reply.text.count("lorem") == 5_000_000 // len("lorem ")
    assert reply.finish_reason == "stop"


def test_large_reply_streamed(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault("large", size=300_000)
    events, err = run(make())
    assert err is None
    words = 300_000 // len("lorem ")
    assert len(of(events, TextDelta)) == words
    assert text(events).count("lorem") == words
    assert of(events, Usage) == [Usage(7, words)]


# --- HTTP errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls", "says"),
    [
        (401, AuthFailed, "rejected the API key (401)"),
        (403, AuthFailed, "refused access (403)"),
        (404, NotFound, "(404)"),
        (422, BadRequest, "rejected the request (422)"),
        (429, RateLimited, "rate limiting requests (429)"),
        (500, ServerError, "internal error (500)"),
        (503, ServerError, "unavailable or still loading (503)"),
    ],
)
def test_status_faults_become_typed_errors(
    make: Make,
    openai_server: OpenAITestServer,
    status: int,
    cls: type[InferenceError],
    says: str,
) -> None:
    openai_server.fault("status", times=-1, status=status)
    events, err = run(make(max_retries=0))
    assert events == []
    assert type(err) is cls
    assert err.status == status
    assert says in err.message
    assert f"Simulated error {status}." in err.message  # what the server said, in its words
    assert err.detail.startswith(f"HTTP {status} ")
    assert f"{openai_server.url}/chat/completions" in err.detail
    assert len(openai_server.requests) == 1

    with pytest.raises(cls) as raised:
        make(max_retries=0).chat(PROMPT, GenerationParams())
    assert raised.value.status == status
    assert len(openai_server.requests) == 2


def test_html_error_page(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault("html")
    _events, err = run(make(max_retries=0))
    assert isinstance(err, ServerError)
    assert err.status == 502
    assert err.message == (
        "The endpoint had an internal error (502): an HTML page: 502 Bad Gateway. Try again later."
    )
    assert "<center>nginx</center>" in err.detail


def test_not_json(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault("not_json")
    events, err = run(make())
    assert events == []
    assert isinstance(err, BadResponse)
    assert err.message == "The stream carried something that is not JSON."
    assert "this is not json" in err.detail

    openai_server.fault("not_json")
    with pytest.raises(BadResponse) as raised:
        make().chat(PROMPT, GenerationParams())
    assert raised.value.message.startswith("The endpoint answered with text instead of JSON.")
    assert "Service is up. Try /docs for the API." in raised.value.detail


def test_wrong_shape(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault("wrong_shape")
    events, err = run(make())
    assert events == []
    assert isinstance(err, BadResponse)
    assert "shape of a chat completion stream" in err.message
    assert "OpenAI-compatible" in err.message

    openai_server.fault("wrong_shape")
    with pytest.raises(BadResponse) as raised:
        make().chat(PROMPT, GenerationParams())
    assert "(no choices[0].message.content)" in raised.value.message
    assert '"result": "Echo: hello there world"' in raised.value.detail


def test_error_event_mid_stream_keeps_the_text_so_far(
    make: Make, openai_server: OpenAITestServer
) -> None:
    openai_server.fault("error_event", after=2, message="GPU fell off the bus")
    events, err = run(make())
    assert text(events) == "Echo: hello"
    assert isinstance(err, ServerError)
    assert err.message == "The model stopped with an error mid-reply: GPU fell off the bus"
    assert len(openai_server.requests) == 1  # text was streamed: never retried


def test_cut_connection_mid_stream(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault("cut", after=3)
    events, err = run(make())
    assert text(events) == "Echo: hello there"
    assert isinstance(err, StreamInterrupted)
    assert err.message == "The server closed the connection before the reply was complete."
    assert "RemoteProtocolError" in err.detail
    assert len(openai_server.requests) == 1


def test_truncated_stream_without_finish_or_done(
    make: Make, openai_server: OpenAITestServer
) -> None:
    openai_server.fault("truncated", after=1)
    events, err = run(make())
    assert text(events) == "Echo:"
    assert of(events, Finish) == []
    assert isinstance(err, StreamInterrupted)
    assert "stopped before the server said it was finished" in err.message
    assert "What arrived is kept." in err.message
    assert len(openai_server.requests) == 1


def test_slow_headers_hit_the_read_timeout(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault("slow_headers", seconds=1.0)
    events, err = run(make(timeouts=Timeouts(read=0.2)))
    assert events == []
    assert isinstance(err, RequestTimedOut)
    assert err.message.startswith("The endpoint stopped answering for 0.2 s.")
    assert "ReadTimeout" in err.detail
    assert len(openai_server.requests) == 1  # a read timeout is not retried


def test_stall_mid_stream_hits_the_read_timeout(
    make: Make, openai_server: OpenAITestServer
) -> None:
    openai_server.fault("stall", after=2, seconds=1.0)
    events, err = run(make(timeouts=Timeouts(read=0.2)))
    assert text(events) == "Echo: hello"
    assert isinstance(err, RequestTimedOut)
    assert "stopped answering for 0.2 s" in err.message
    assert len(openai_server.requests) == 1


def test_invalid_parameter_is_reported_and_not_retried(
    make: Make, openai_server: OpenAITestServer
) -> None:
    _events, err = run(make(), GenerationParams(temperature=5))
    assert isinstance(err, BadRequest)
    assert err.message == (
        "The endpoint rejected the request (400): 5 is greater than the maximum of 2 - "
        "'temperature'."
    )
    assert len(openai_server.requests) == 1


def test_unknown_model_is_not_found(make: Make, openai_server: OpenAITestServer) -> None:
    _events, err = run(make(model="gpt-nope"))
    assert isinstance(err, NotFound)
    assert "The model `gpt-nope` does not exist" in err.message
    assert len(openai_server.requests) == 1


# --- retries -------------------------------------------------------------------------------------


def test_429_is_retried_honouring_retry_after(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault("status", times=2, status=429, headers={"Retry-After": "0"})
    with retry_log() as retries:
        events, err = run(make(max_retries=2))
    assert err is None
    assert text(events) == ECHO
    assert len(openai_server.requests) == 3
    # The wait is the server's Retry-After (0 s), not the backoff (0.5 s and up).
    assert [r.getMessage().rsplit(" ", 1)[-1] for r in retries] == ["0.0s", "0.0s"]
    assert all("after HTTP 429" in r.getMessage() for r in retries)
    bodies = [r.body for r in openai_server.requests]
    assert bodies[0] == bodies[1] == bodies[2]  # the same request, sent again


def test_retry_after_as_an_http_date(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault(
        "status", status=503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    )
    reply = make().chat(PROMPT, GenerationParams())
    assert reply.text == ECHO
    assert len(openai_server.requests) == 2


def test_5xx_without_retry_after_is_retried_with_backoff(
    make: Make, openai_server: OpenAITestServer
) -> None:
    openai_server.fault("status", status=500)
    events, err = run(make(max_retries=2))
    assert err is None
    assert text(events) == ECHO
    assert len(openai_server.requests) == 2


def test_retries_are_bounded(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault("status", times=-1, status=502, headers={"Retry-After": "0"})
    _events, err = run(make(max_retries=2))
    assert isinstance(err, ServerError)
    assert err.status == 502
    assert len(openai_server.requests) == 3


def test_long_retry_after_is_reported_not_waited_for(
    make: Make, openai_server: OpenAITestServer
) -> None:
    openai_server.fault("status", times=-1, status=429, headers={"Retry-After": "120"})
    _events, err = run(make(max_retries=2, max_retry_wait=1.0))
    assert isinstance(err, RateLimited)
    assert err.retry_after == 120
    assert "It asked to wait 120 s." in err.message
    assert len(openai_server.requests) == 1


def test_insufficient_quota_is_not_retried(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault(
        "status",
        times=-1,
        status=429,
        message="You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
        headers={"Retry-After": "0"},
    )
    with retry_log() as retries:
        _events, err = run(make(max_retries=2))
    assert isinstance(err, RateLimited)
    assert err.message.startswith("The account behind this API key is out of quota (429)")
    assert len(openai_server.requests) == 1
    assert retries == []


def test_x_should_retry_false_is_respected(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault(
        "status", times=-1, status=503, headers={"Retry-After": "0", "x-should-retry": "false"}
    )
    _events, err = run(make(max_retries=2))
    assert isinstance(err, ServerError)
    assert len(openai_server.requests) == 1


def test_no_retry_once_text_has_streamed(make: Make, openai_server: OpenAITestServer) -> None:
    # A retryable kind of failure (server error event) after the first words: kept as is.
    openai_server.fault("error_event", after=1)
    openai_server.fault("status", status=503, headers={"Retry-After": "0"})  # would be next
    events, err = run(make(max_retries=2))
    assert text(events) == "Echo:"
    assert isinstance(err, ServerError) and err.retryable
    assert len(openai_server.requests) == 1


class _StartServerOnRetry(logging.Handler):
    """Brings a server up on `port` when the adapter logs its first retry."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.server: OpenAITestServer | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("retrying") and self.server is None:
            self.server = OpenAITestServer(port=self.port).start()


def test_connection_refused_is_retried_before_the_first_byte(client: httpx.Client) -> None:
    port = free_port()  # nothing listens there yet: the first attempt is refused
    starter = _StartServerOnRetry(port)
    logger = logging.getLogger("plugboard.http")
    level = logger.level
    logger.addHandler(starter)
    logger.setLevel(logging.INFO)
    try:
        target = Target(
            kind="openai_compat",
            base_url=f"http://127.0.0.1:{port}/v1",
            model="test-model",
            max_retries=2,
        )
        reply = OpenAICompatAdapter(target, client).chat(PROMPT, GenerationParams())
    finally:
        logger.removeHandler(starter)
        logger.setLevel(level)
        if starter.server:
            starter.server.stop()
    assert starter.server is not None, "the refused connection was never retried"
    assert reply.text == ECHO
    assert len(starter.server.requests) == 1


def test_connection_refused_everywhere(client: httpx.Client) -> None:
    port = free_port()
    target = Target(
        kind="openai_compat", base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1
    )
    with retry_log() as retries:
        _events, err = run(OpenAICompatAdapter(target, client))
    assert isinstance(err, ConnectionFailed)
    assert err.message == (
        f"Nothing is listening at 127.0.0.1:{port} (connection refused). "
        "Is the model server running, and is the port right?"
    )
    assert len(retries) == 1


def test_dns_failure_is_not_retried(client: httpx.Client) -> None:
    target = Target(kind="openai_compat", base_url="http://plugboard-test.invalid/v1", model="m")
    with retry_log() as retries:
        _events, err = run(OpenAICompatAdapter(target, client))
    assert isinstance(err, ConnectionFailed)
    assert err.message == (
        "Cannot find the server 'plugboard-test.invalid' (DNS lookup failed). "
        "Check the spelling of the endpoint URL."
    )
    assert retries == []


def test_tls_to_a_plain_http_server_is_named_and_not_retried(
    make: Make, openai_server: OpenAITestServer
) -> None:
    with retry_log() as retries:
        _events, err = run(make(f"https://127.0.0.1:{openai_server.port}/v1"))
    assert isinstance(err, ConnectionFailed)
    assert f"The secure connection to 127.0.0.1:{openai_server.port} failed (TLS)" in err.message
    assert "SSL" in err.detail
    assert retries == []
    assert openai_server.requests == []  # no HTTP request got through


# --- graceful fallbacks for servers that reject newer OpenAI fields ------------------------------


def test_stream_options_rejected_then_dropped_and_remembered(
    make: Make, openai_server: OpenAITestServer
) -> None:
    openai_server.reject_stream_options = True
    events, err = run(make())
    assert err is None
    assert text(events) == ECHO
    assert of(events, Usage) == []  # the server could not be asked for it
    first, second = (r.json() for r in openai_server.requests)
    assert first["stream_options"] == {"include_usage": True}
    assert "stream_options" not in second
    assert {k: v for k, v in first.items() if k != "stream_options"} == second

    events, err = run(make())  # the next turn goes straight to the working body
    assert err is None and text(events) == ECHO
    assert len(openai_server.requests) == 3
    assert "stream_options" not in openai_server.requests[2].json()


def test_max_tokens_rejected_then_sent_as_max_completion_tokens(
    make: Make, openai_server: OpenAITestServer
) -> None:
    openai_server.reject_max_tokens = True
    reply = make().chat(PROMPT, GenerationParams(max_tokens=2))
    assert reply.text == "Echo: hello"
    first, second = (r.json() for r in openai_server.requests)
    assert first["max_tokens"] == 2
    assert "max_tokens" not in second
    assert second["max_completion_tokens"] == 2

    make().chat(PROMPT, GenerationParams(max_tokens=3))
    third = openai_server.requests[2].json()
    assert third["max_completion_tokens"] == 3 and "max_tokens" not in third
    assert len(openai_server.requests) == 3


def test_both_fallbacks_in_one_streamed_turn(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.reject_stream_options = True
    openai_server.reject_max_tokens = True
    events, err = run(make(), GenerationParams(max_tokens=3))
    assert err is None
    assert text(events) == "Echo: hello there"
    assert len(openai_server.requests) == 3
    last = openai_server.requests[2].json()
    assert "stream_options" not in last and "max_tokens" not in last
    assert last["max_completion_tokens"] == 3


# --- base URL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix",
    ["", "/", "/v1", "/v1/", "/v1/chat/completions", "/v1/chat/completions/", "/v1/models"],
)
def test_base_url_forms_reach_the_same_paths(
    make: Make, openai_server: OpenAITestServer, suffix: str
) -> None:
    adapter = make(f"  {openai_server.root}{suffix}  ")
    assert adapter.chat(PROMPT, GenerationParams()).text == ECHO
    assert adapter.list_remote_models() == ["test-model", "echo-1"]
    assert [(r.method, r.path) for r in openai_server.requests] == [
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://localhost:8080", "http://localhost:8080/v1"),
        ("https://api.example.com/openai/v1/chat/completions", "https://api.example.com/openai/v1"),
        ("https://api.example.com/openai/v1/completions", "https://api.example.com/openai/v1"),
        ("http://h:1/api/", "http://h:1/api"),
    ],
)
def test_normalise_base_url_keeps_a_prefix(given: str, expected: str) -> None:
    assert normalise_base_url(given) == expected


# --- auth and headers ----------------------------------------------------------------------------


def test_bearer_key_and_extra_headers_are_sent(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.api_key = KEY
    adapter = make(auth=Auth("bearer", KEY), headers={"OpenAI-Organization": "org-1"})
    assert adapter.chat(PROMPT, GenerationParams()).text == ECHO
    headers = openai_server.requests[0].headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["openai-organization"] == "org-1"


def test_api_key_header_with_prefix(make: Make, openai_server: OpenAITestServer) -> None:
    adapter = make(auth=Auth("api_key", "abc123", header="X-API-Key", prefix="Token"))
    adapter.chat(PROMPT, GenerationParams())
    headers = openai_server.requests[0].headers
    assert headers["x-api-key"] == "Token abc123"
    assert "authorization" not in headers


# --- model list ----------------------------------------------------------------------------------


def test_list_remote_models(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.models = ("alpha", "beta/gamma-7b", "delta")
    assert make().list_remote_models() == ["alpha", "beta/gamma-7b", "delta"]
    assert [(r.method, r.path) for r in openai_server.requests] == [("GET", "/v1/models")]


def test_list_remote_models_needs_the_key(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.api_key = "the-right-key"
    with pytest.raises(AuthFailed) as raised:
        make(auth=Auth("bearer", "the-wrong-key")).list_remote_models()
    assert "(401)" in raised.value.message


# --- test_connection: the failing layer, in plain words ------------------------------------------


def layers(report: Any) -> list[tuple[str, bool]]:
    return [(s.layer, s.ok) for s in report.steps]


def test_connection_ok(make: Make, openai_server: OpenAITestServer) -> None:
    report = make().test_connection()
    assert report.ok, report.summary
    assert layers(report) == [
        ("DNS", True),
        ("Connection", True),
        ("Model list", True),
        ("Chat request", True),
    ]
    assert report.remote_models == ["test-model", "echo-1"]
    assert report.steps[2].message == "The server lists 2 models."
    assert report.summary == "'test-model' answered (length): 'Echo:'."
    probe = chat_requests(openai_server)[0].json()
    assert probe["max_tokens"] == 1 and probe["temperature"] == 0 and probe["stream"] is False


def test_connection_dns(make: Make) -> None:
    report = make("http://no-such-host.invalid/v1").test_connection()
    assert not report.ok
    assert layers(report) == [("DNS", False)]
    assert report.summary == (
        "DNS: Cannot find the server 'no-such-host.invalid'. Check the spelling of the URL."
    )


def test_connection_refused(make: Make) -> None:
    port = free_port()
    report = make(f"http://127.0.0.1:{port}/v1").test_connection()
    assert layers(report) == [("DNS", True), ("Connection", False)]
    assert report.summary.startswith(f"Connection: Nothing is listening at 127.0.0.1:{port}")
    assert "(connection refused)" in report.summary


def test_connection_authentication(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.api_key = "sk-server-knows-this-one-0000"
    report = make(auth=Auth("bearer", KEY)).test_connection()
    assert layers(report) == [("DNS", True), ("Authentication", False)]
    assert "The endpoint rejected the API key (401)" in report.summary
    assert "sk-li***6yJ1" in report.summary  # the server's own partial echo is kept
    assert KEY not in report.summary


def test_connection_path_not_found(make: Make, openai_server: OpenAITestServer) -> None:
    report = make(f"{openai_server.root}/api").test_connection()
    assert not report.ok
    assert layers(report) == [
        ("DNS", True),
        ("Connection", True),
        ("Model list", True),  # optional: a server without /models is fine
        ("Path", False),
    ]
    assert report.summary.startswith(
        f"Path: Nothing was found at {openai_server.root}/api/chat/completions (404)"
    )
    assert [r.path for r in openai_server.requests] == ["/api/models", "/api/chat/completions"]


def test_connection_unknown_model_name(make: Make) -> None:
    report = make(model="gpt-nope").test_connection()
    assert layers(report)[-1] == ("Model name", False)
    assert report.steps[2].message == "The server lists 2 models, but not 'gpt-nope'."
    assert report.summary == (
        "Model name: The server does not know the model 'gpt-nope'. It has: test-model, echo-1."
    )


def test_connection_missing_model_name(make: Make, openai_server: OpenAITestServer) -> None:
    report = make(model="").test_connection()
    assert layers(report)[-1] == ("Model name", False)
    assert report.summary == (
        "Model name: Enter the model name to use. The server lists: test-model, echo-1."
    )
    assert chat_requests(openai_server) == []


def test_connection_response_shape(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.fault("wrong_shape", times=2)  # the model list request takes one
    report = make().test_connection()
    assert layers(report)[-1] == ("Response shape", False)
    assert "did not have the shape of a chat completion" in report.summary


def test_connection_server_error_names_the_request(
    make: Make, openai_server: OpenAITestServer
) -> None:
    openai_server.fault("status", times=-1, status=500, headers={"Retry-After": "0"})
    report = make().test_connection()
    assert layers(report)[-1] == ("Request", False)
    assert "internal error (500)" in report.summary
    # The model list is asked once; the chat probe is retried like a real turn.
    assert [r.path for r in openai_server.requests] == ["/v1/models"] + 3 * ["/v1/chat/completions"]


# --- closing the stream --------------------------------------------------------------------------


def test_closing_the_stream_early_closes_the_http_response() -> None:
    server = OpenAITestServer(chunk_delay=0.02).start()
    server.reply = " ".join(f"w{i}" for i in range(500))
    responses: list[httpx.Response] = []
    client = httpx.Client(event_hooks={"response": [responses.append]})
    try:
        target = Target(kind="openai_compat", base_url=server.url, model="test-model")
        stream = OpenAICompatAdapter(target, client).stream_chat(PROMPT, GenerationParams())
        assert next(stream) == TextDelta("w0")
        [response] = responses
        assert not response.is_closed
        stream.close()  # what Stop or a page rerun does
        assert response.is_closed
        deadline = time.monotonic() + 10
        while server.disconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.disconnects == 1  # the server saw the client go away mid-reply
        assert len(server.requests) == 1
    finally:
        client.close()
        server.stop()


def test_a_finished_stream_leaves_the_response_closed() -> None:
    server = OpenAITestServer().start()
    responses: list[httpx.Response] = []
    hooked = httpx.Client(event_hooks={"response": [responses.append]})
    try:
        target = Target(kind="openai_compat", base_url=server.url, model="test-model")
        events = list(OpenAICompatAdapter(target, hooked).stream_chat(PROMPT, GenerationParams()))
        assert text(events) == ECHO
        assert [r.is_closed for r in responses] == [True]
    finally:
        hooked.close()
        server.stop()


# --- secrets -------------------------------------------------------------------------------------


def assert_no_key(err: InferenceError | None) -> None:
    assert err is not None
    assert KEY not in err.message
    assert KEY not in err.detail
    assert KEY not in str(err)


def test_rejected_key_is_never_shown_in_full(make: Make, openai_server: OpenAITestServer) -> None:
    openai_server.api_key = "sk-another-key-entirely-000000"
    _events, err = run(make(auth=Auth("bearer", KEY)))
    assert isinstance(err, AuthFailed)
    assert_no_key(err)
    assert "Incorrect API key provided: sk-li***6yJ1." in err.message  # the server's own mask


def test_server_echoing_the_full_key_is_scrubbed(
    make: Make, openai_server: OpenAITestServer
) -> None:
    openai_server.fault("status", status=400, message=f"Key {KEY} is not valid for this org")
    _events, err = run(make(auth=Auth("bearer", KEY)))
    assert isinstance(err, BadRequest)
    assert_no_key(err)
    assert "Key sk-…6yJ1 is not valid for this org" in err.message

    openai_server.fault("error_event", after=1, message=f"revoked: {KEY}")
    _events, err = run(make(auth=Auth("bearer", KEY)))
    assert isinstance(err, ServerError)
    assert_no_key(err)


class EchoServer(base.TestHTTPServer):
    """Like httpbin's /anything: answers every request with what it received, headers too
    (a wrong URL pointing at a debugging proxy)."""

    def route(self, handler: Handler, request: Recorded) -> None:
        handler.send_json(
            200, {"method": request.method, "path": request.path, "headers": request.headers}
        )


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer().start()
    yield server
    server.stop()


def test_wrong_shape_from_an_echoing_endpoint_does_not_leak_the_key(
    echo_server: EchoServer, client: httpx.Client
) -> None:
    target = Target(
        kind="openai_compat", base_url=echo_server.root, model="m", auth=Auth("bearer", KEY)
    )
    adapter = OpenAICompatAdapter(target, client)
    _events, err = run(adapter)
    assert isinstance(err, BadResponse)
    assert_no_key(err)
    assert "Bearer sk-…6yJ1" in err.detail  # the detail still shows what came back

    with pytest.raises(BadResponse) as raised:
        adapter.chat(PROMPT, GenerationParams())
    assert_no_key(raised.value)

    with pytest.raises(BadResponse) as listed:
        adapter.list_remote_models()
    assert "model list did not have the expected shape" in listed.value.message
    assert_no_key(listed.value)

    report = adapter.test_connection()
    assert layers(report)[-1] == ("Response shape", False)
    assert all(KEY not in s.message for s in report.steps)
