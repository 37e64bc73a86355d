"""The Custom API (JSONata) adapter over real HTTP: each preset against the foreign API it is
for (tests/servers/custom_api_server.py, and TGI's /generate), auth, secrets, JSONata bounds,
batching, N, multi-turn, retries and Test connection."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core import catalog
from core.catalog import ModelDraft, ProviderDraft, ValidationFailed
from core.chat import TurnRequest, collect, stream_turn
from core.inference import custom_api
from core.inference.custom_api import PRESETS, CustomAPIAdapter
from core.inference.registry import make_adapter, spec_for
from core.inference.target import Auth, Target
from core.inference.types import (
    AuthFailed,
    BadResponse,
    ConfigurationError,
    ConnectionFailed,
    Details,
    Finish,
    GenerationParams,
    Message,
    RateLimited,
    RequestTimedOut,
    ServerError,
    StreamInterrupted,
    TextDelta,
    Usage,
)
from core.secrets import mask
from core.settings import Timeouts
from tests.conftest import free_port
from tests.servers.custom_api_server import CustomAPITestServer
from tests.servers.tgi_server import DEFAULT_REPLY, TGITestServer

TOKEN = "tok-together-0123456789abcdef"
KEY = "key-custom-0123456789abcdef"
CONVERSATION = [
    Message("system", "Be brief."),
    Message("user", "What is machine learning?"),
    Message("assistant", "Machine learning is…"),
    Message("user", "And neural networks?"),
]
ENDLESS = "($loop := function($n) { $loop($n + 1) }; $loop(0))"
BOTTOMLESS = "($deep := function($n) { 1 + $deep($n + 1) }; $deep(0))"


@pytest.fixture(scope="module")
def _server() -> Iterator[CustomAPITestServer]:
    server = CustomAPITestServer(token=TOKEN, api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture
def server(_server: CustomAPITestServer) -> Iterator[CustomAPITestServer]:
    _server.reset()
    yield _server
    _server.reset()


@pytest.fixture(scope="module")
def _tgi() -> Iterator[TGITestServer]:
    server = TGITestServer().start()
    yield server
    server.stop()


@pytest.fixture
def tgi(_tgi: TGITestServer) -> TGITestServer:
    _tgi.reset()
    return _tgi


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(custom_api, "RETRY_BASE_DELAY", 0.01)


def make(
    url: str,
    *,
    preset: str | None = None,
    auth: Auth | None = None,
    model: str = "",
    headers: dict[str, str] | None = None,
    max_retries: int = 2,
    timeouts: Timeouts | None = None,
    client: httpx.Client | None = None,
    **settings: Any,
) -> CustomAPIAdapter:
    values: dict[str, Any] = {}
    if preset:
        p = PRESETS[preset]
        values.update(
            preset=preset,
            request_expression=p.request_expression,
            response_expression=p.response_expression,
            response_type=p.response_type,
        )
    values.update(settings)
    return CustomAPIAdapter(
        Target(
            kind="custom_api",
            base_url=url,
            model=model,
            auth=auth or Auth(),
            headers=headers or {},
            settings=values,
            timeouts=timeouts or Timeouts(),
            max_retries=max_retries,
            max_retry_wait=5,
        ),
        client,
    )


def together(server: CustomAPITestServer, **kw: Any) -> CustomAPIAdapter:
    return make(
        server.url + "/v1/chat/completions",
        preset="openai_chat",
        auth=Auth("bearer", TOKEN),
        model="mistralai/Mistral-7B-Instruct-v0.3",
        **kw,
    )


def echo(server: CustomAPITestServer, **kw: Any) -> CustomAPIAdapter:
    return make(server.url + "/echo-batch", **kw)


def ask(text: str) -> list[Message]:
    return [Message("user", text)]


def flat(messages: list[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


# --- every preset against its foreign API, unchanged ---------------------------------------------


def test_openai_preset_talks_to_a_together_style_api(server):
    adapter = together(server)
    events = list(adapter.stream_chat(CONVERSATION, GenerationParams(0.2, 64)))

    assert events == [TextDelta("Echo: And neural networks?"), Usage(), Finish("stop")]
    sent = server.requests_to("/v1/chat/completions")[-1]
    assert sent.json() == {
        "model": "mistralai/Mistral-7B-Instruct-v0.3",  # from $model, not hard-coded
        "messages": flat(CONVERSATION),
        "max_tokens": 64,
        "temperature": 0.2,
        "n": 1,
    }
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["content-type"] == "application/json;charset=UTF-8"
    assert sent.headers["accept"] == "application/json, text/plain, */*"


def test_openai_preset_with_n_gets_every_choice(server):
    events = list(together(server).stream_chat(ask("Hi"), GenerationParams(extra={"n": 3})))
    assert events[0] == TextDelta("Echo: Hi")
    assert Details({"replies": ["Echo: Hi", "Echo 2: Hi", "Echo 3: Hi"]}) in events
    assert server.requests[-1].json()["n"] == 3


def test_databricks_preset_talks_to_a_serving_endpoint(server):
    adapter = make(
        server.url + "/serving-endpoints/databricks-dbrx-instruct/invocations",
        preset="databricks",
        auth=Auth("bearer", TOKEN),
    )
    replies = adapter.complete([CONVERSATION], GenerationParams(temperature=0.1, max_tokens=128))

    assert replies == ["Echo: And neural networks?"]
    body = server.requests[-1].json()
    assert body == {"messages": flat(CONVERSATION), "max_tokens": 128, "temperature": 0.1}


def test_tgi_preset_talks_to_tgi_generate(tgi):
    adapter = make(tgi.url + "/generate", preset="tgi_generate")
    reply = adapter.chat(CONVERSATION[:2], GenerationParams(temperature=0.5, max_tokens=3))

    assert reply.text == "Deep learning is"
    body = tgi.requests[-1].json()
    assert tgi.requests[-1].path == "/generate"
    assert body == {
        "inputs": "System: Be brief.\nUser: What is machine learning?\nAssistant:",
        "parameters": {"max_new_tokens": 3, "temperature": 0.5, "do_sample": True},
    }
    # TGI refuses temperature 0; the preset then leaves it out and decodes greedily.
    reply = adapter.chat(ask("Hi"), GenerationParams(temperature=0, max_tokens=100))
    assert reply.text == DEFAULT_REPLY
    assert tgi.requests[-1].json()["parameters"] == {"max_new_tokens": 100, "do_sample": False}


def test_passthrough_with_a_boolean_guardrail(server):
    conversations = [ask("Hello there"), ask("Plan an ATTACK on the server"), ask("Bye")]
    adapter = make(
        server.url + "/guardrail", preset="passthrough", response_type="boolean", batch_size=3
    )

    assert adapter.complete(conversations, GenerationParams(0, 32)) == [False, True, False]
    sent = server.requests[-1].json()
    assert sent == {  # the standard format as is
        "messages": [flat(c) for c in conversations],
        "N": 1,
        "seq_len": 32,
        "temperature": 0,
    }
    events = list(adapter.stream_chat(conversations[1], GenerationParams()))
    assert events == [
        TextDelta("true"),
        Details({"verdicts": [True]}),
        Usage(),
        Finish("stop"),
    ]
    events = list(adapter.stream_chat(ask("fine"), GenerationParams(extra={"n": 2})))
    assert events[:2] == [TextDelta("false, false"), Details({"verdicts": [False, False]})]


def test_boolean_replies_on_a_string_card_say_what_to_change(server):
    adapter = make(server.url + "/guardrail")
    with pytest.raises(BadResponse) as err:
        adapter.complete([ask("hi")], GenerationParams())
    assert str(err.value) == (
        "The endpoint's reply should itself be a JSON list of texts (there is no response "
        "expression), got a list whose item 1 is a true/false value (false). For a guardrail "
        "model, set Response type to boolean."
    )
    adapter = make(server.url + "/echo-batch", response_type="boolean")
    with pytest.raises(BadResponse) as err:
        adapter.complete([ask("hi")], GenerationParams())
    assert "list of true/false values" in str(err.value)
    assert "set Response type to string" in str(err.value)


# --- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "auth", "prefix", "expected"),
    [
        ("/echo-batch", Auth(), "Token", {}),
        ("/guardrail", Auth("bearer", TOKEN), "Token", {"authorization": f"Bearer {TOKEN}"}),
        (
            "/keyed/echo-batch",
            Auth("api_key", KEY, "X-API-Key", "Token"),
            "Token",
            {"x-api-key": f"Token {KEY}"},
        ),
        ("/keyed/echo-batch", Auth("api_key", KEY, "X-API-Key", ""), "", {"x-api-key": KEY}),
    ],
    ids=["none", "bearer", "api_key", "api_key_without_prefix"],
)
def test_each_auth_type_reaches_the_server(server, path, auth, prefix, expected):
    server.api_key_prefix = prefix
    server.guardrail_token = TOKEN
    response_type = "boolean" if path == "/guardrail" else "string"
    adapter = make(server.url + path, auth=auth, response_type=response_type)
    assert len(adapter.complete([ask("hi")], GenerationParams())) == 1

    received = server.requests[-1].headers
    credentials = {k: received[k] for k in ("authorization", "x-api-key") if k in received}
    assert credentials == expected


def test_a_wrong_api_key_is_refused_without_showing_it(server):
    wrong = "key-wrong-9876543210fedcba"
    adapter = make(server.url + "/keyed/echo-batch", auth=Auth("api_key", wrong, "X-API-Key"))
    with pytest.raises(AuthFailed) as err:
        adapter.complete([ask("hi")], GenerationParams())
    assert "(401)" in str(err.value)
    assert wrong not in str(err.value) and wrong not in err.value.detail
    assert mask(wrong) in err.value.detail  # the server repeated it; we masked it


def test_headers_defaults_then_extra_then_auth(server):
    adapter = echo(
        server,
        auth=Auth("api_key", KEY, "X-API-Key", "Token"),
        headers={"accept": "application/json", "X-Team": "eval", "x-api-key": "from-extra"},
    )
    adapter.complete([ask("hi")], GenerationParams())
    received = server.requests[-1].headers
    assert received["accept"] == "application/json"  # extra headers beat the defaults
    assert received["x-team"] == "eval"
    assert received["x-api-key"] == f"Token {KEY}"  # auth beats extra headers
    assert received["content-type"] == "application/json;charset=UTF-8"


# --- the key stays secret ----------------------------------------------------------------------


def test_the_key_is_masked_in_the_preview_and_scrubbed_from_errors(server):
    adapter = together(server)
    preview = adapter.preview_request(CONVERSATION, GenerationParams(max_tokens=10))
    assert preview["headers"]["Authorization"] == f"Bearer {mask(TOKEN)}"
    assert TOKEN not in json.dumps(preview)

    server.fault("echo_auth", status=500)
    with pytest.raises(ServerError) as err:
        adapter.complete([ask("hi")], GenerationParams())
    assert "Upstream refused Bearer" in str(err.value)
    assert TOKEN not in str(err.value) and TOKEN not in err.value.detail

    server.fault("echo_auth", status=500)
    report = adapter.test_connection()
    assert not report.ok and TOKEN not in json.dumps(report.info) + report.summary


def test_the_key_never_reaches_the_log_file(make_workspace, server):
    ws = make_workspace()
    p = PRESETS["openai_chat"]
    card = catalog.add_custom_model(
        ws,
        ProviderDraft(
            name="Together",
            kind="custom_api",
            base_url=server.url + "/v1/chat/completions",
            auth_type="bearer",
            api_key=TOKEN,
            settings={
                "preset": "openai_chat",
                "request_expression": p.request_expression,
                "response_expression": p.response_expression,
                "enable_retry": True,
            },
        ),
        ModelDraft(display_name="Mistral on Together", remote_model="mistralai/Mistral-7B"),
    )
    ok = collect(stream_turn(ws, TurnRequest(model_id=card.id, prompt="Hello")))
    assert ok.status == "ok" and ok.text == "Echo: Hello"

    server.fault("echo_auth", times=3, status=500)  # retried twice, then it fails
    failed = collect(stream_turn(ws, TurnRequest(model_id=card.id, prompt="Hello again")))
    assert failed.status == "error" and isinstance(failed.error, ServerError)
    assert len(server.requests) == 4

    log_text = ws.settings.log_path.read_text()
    assert "turn failed" in log_text and "retrying POST" in log_text
    assert TOKEN not in log_text
    assert TOKEN not in (failed.error.message + failed.error.detail)


def test_the_catalog_checks_the_expressions_when_saving(workspace, server):
    with pytest.raises(ValidationFailed) as err:
        catalog.add_custom_model(
            workspace,
            ProviderDraft(
                name="Broken",
                kind="custom_api",
                base_url=server.url + "/echo-batch",
                auth_type="none",
                settings={"request_expression": '{"a": }', "batch_size": 0},
            ),
            ModelDraft(display_name="Broken model"),
        )
    assert err.value.errors["settings.request_expression"].startswith(
        "Syntax error at line 1, column 7:"
    )
    assert "settings.batch_size" in err.value.errors
    card = catalog.add_custom_model(
        workspace,
        ProviderDraft(
            name="Echo", kind="custom_api", base_url=server.url + "/echo-batch", auth_type="none"
        ),
        ModelDraft(display_name="Echo model", default_params={"n": 2, "max_tokens": 20}),
    )
    target = catalog.target_for(workspace, card.id)
    assert target.settings == spec_for("custom_api").settings_defaults
    adapter = make_adapter(target)
    assert isinstance(adapter, CustomAPIAdapter)
    assert adapter.chat(ask("hi"), GenerationParams(extra={"n": 2})).details == {
        "replies": ["Reply to: hi", "Reply 2 to: hi"]
    }


# --- bad expressions ----------------------------------------------------------------------------


def test_a_syntax_error_names_the_expression_and_its_position(server):
    broken = '{\n  "messages": $reduce(messages, $append),\n  "model": \n}'
    adapter = echo(server, request_expression=broken)
    with pytest.raises(ConfigurationError) as err:
        adapter.complete([ask("hi")], GenerationParams())
    assert str(err.value) == (
        "Check the card's settings. Request expression: Syntax error at line 4, column 1: "
        "The symbol } cannot be used as a unary operator."
    )
    assert server.requests == []  # nothing was sent

    preview = adapter.preview_request(ask("hi"), GenerationParams())
    assert preview["body"] is None
    assert "syntax error at line 4, column 1" in preview["error"]
    assert preview["standard_body"]["messages"] == [[{"role": "user", "content": "hi"}]]


@pytest.mark.parametrize(
    ("expression", "said"),
    [
        (
            "choices[0].message.content",
            'should give a list of texts, got a text ("Echo: hi"). Wrap the expression in [ ]',
        ),
        ("choices", "got a list whose item 1 is an object with keys index, message,"),
        ("reply.text", "got nothing. It matched nothing in the reply: check the field names."),
        ("[usage.total_tokens]", "got a list whose item 1 is a number (3)"),
    ],
)
def test_a_response_expression_of_the_wrong_shape(server, expression, said):
    adapter = together(server, response_expression=expression)
    with pytest.raises(BadResponse) as err:
        adapter.complete([ask("hi")], GenerationParams())
    assert str(err.value).startswith("The response expression should give a list of texts")
    assert said in str(err.value)


def test_a_response_expression_failing_on_the_reply(server):
    adapter = together(server, response_expression="[choices[0].message.content + 1]")
    with pytest.raises(BadResponse) as err:
        adapter.complete([ask("hi")], GenerationParams())
    assert str(err.value) == (
        "The response expression failed: The left side of the + operator must evaluate to a "
        "number [T2001]. Check the expression against the reply's shape."
    )
    assert '"choices"' in err.value.detail  # the reply it ran on


def test_a_request_expression_failing_with_a_python_error(server):
    adapter = echo(server, request_expression='{"n": $number("many")}')
    with pytest.raises(ConfigurationError) as err:
        adapter.complete([ask("hi")], GenerationParams())
    assert str(err.value).startswith("The request expression failed: ")
    assert "(ValueError)" in str(err.value)
    assert server.requests == []


def test_an_endless_expression_is_stopped_within_the_bound(server, monkeypatch):
    monkeypatch.setattr(custom_api, "EVAL_TIMEOUT_MS", 100)
    adapter = echo(server, request_expression=ENDLESS)
    with pytest.raises(ConfigurationError) as err:
        adapter.complete([ask("hi")], GenerationParams())
    assert str(err.value) == (
        "The request expression took longer than 100 ms and was stopped — an endless loop?"
    )
    assert server.requests == []

    adapter = echo(server, response_expression=ENDLESS)
    with pytest.raises(ConfigurationError) as err:
        adapter.complete([ask("hi")], GenerationParams())
    assert "The response expression took longer than 100 ms" in str(err.value)

    adapter = echo(server, request_expression=BOTTOMLESS)
    with pytest.raises(ConfigurationError) as err:
        adapter.complete([ask("hi")], GenerationParams())
    assert str(err.value) == (
        "The request expression went more than 500 levels deep and was stopped — "
        "a recursive function that never ends?"
    )


def test_bounds_hold_on_a_reused_compiled_expression(monkeypatch):
    """protocols.md §6.3: a constructor timeout counts from compilation and a constructor
    stack limit never resets after failures; a fresh frame per evaluation avoids both."""
    monkeypatch.setattr(custom_api, "EVAL_TIMEOUT_MS", 50)
    monkeypatch.setattr(custom_api, "EVAL_MAX_DEPTH", 15)
    text = "a.b.c.d + 1"
    assert custom_api.compiled(text) is custom_api.compiled(text)  # compiled once per thread
    for _ in range(40):  # failing evaluations would leak depth with `stack=`
        with pytest.raises(custom_api.ExpressionFailed) as err:
            custom_api.evaluate_expression(text, {"a": {"b": {"c": {"d": "x"}}}})
        assert err.value.reason == "error" and err.value.code == "T2001"
    good = {"a": {"b": {"c": {"d": 1}}}}
    assert custom_api.evaluate_expression(text, good) == 2
    time.sleep(0.12)  # past the bound since compilation: `timeout=` would fail from now on
    for _ in range(200):
        assert custom_api.evaluate_expression(text, good) == 2
    for _ in range(3):  # and the bound still stops a runaway reused expression, every time
        with pytest.raises(custom_api.ExpressionFailed) as err:
            custom_api.evaluate_expression(ENDLESS, {})
        assert err.value.reason == "timeout"
    assert custom_api.evaluate_expression(text, good) == 2


def test_a_reused_request_expression_keeps_working_through_an_adapter(server, monkeypatch):
    monkeypatch.setattr(custom_api, "EVAL_TIMEOUT_MS", 50)
    adapter = echo(server, request_expression='$merge([$, {"seq_len": seq_len + 1}])')
    for i in range(8):
        assert adapter.complete([ask(f"q{i}")], GenerationParams(max_tokens=5)) == [
            f"Reply to: q{i}"
        ]
    time.sleep(0.12)
    assert adapter.complete([ask("later")], GenerationParams(max_tokens=5)) == ["Reply to: later"]
    assert {r.json()["seq_len"] for r in server.requests} == {6}


def test_expressions_are_compiled_per_thread_and_threads_do_not_mix(server):
    text = PRESETS["openai_chat"].response_expression
    mine = custom_api.compiled(text)
    theirs: list[Any] = []
    results: dict[int, Any] = {}

    def work(i: int) -> None:
        theirs.append(custom_api.compiled(text))
        adapter = echo(server, request_expression='$merge([$, {"N": 1}])', batch_size=2)
        conversations = [ask(f"t{i}-{k}") for k in range(6)]
        results[i] = adapter.complete(conversations, GenerationParams())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(t is not mine for t in theirs)
    for i in range(4):
        assert results[i] == [f"Reply to: t{i}-{k}" for k in range(6)]


# --- batching, N, multi-turn --------------------------------------------------------------------


def test_ten_conversations_in_batches_of_four_make_three_requests(server):
    adapter = echo(server, batch_size=4)
    conversations = [[Message("system", "Be kind."), *ask(f"question {i}")] for i in range(10)]
    replies = adapter.complete(conversations, GenerationParams())

    assert replies == [f"Reply to: question {i}" for i in range(10)]
    sent = server.requests_to("/echo-batch")
    assert [len(r.json()["messages"]) for r in sent] == [4, 4, 2]
    assert sent[2].json()["messages"][1] == flat(conversations[9])


def test_n_replies_per_conversation_are_grouped_in_order(server):
    adapter = echo(server, batch_size=2)
    replies = adapter.complete([ask("a"), ask("b"), ask("c")], GenerationParams(extra={"n": 2}))
    assert replies == [
        "Reply to: a",
        "Reply 2 to: a",
        "Reply to: b",
        "Reply 2 to: b",
        "Reply to: c",
        "Reply 2 to: c",
    ]
    assert [r.json()["N"] for r in server.requests] == [2, 2]

    events = list(echo(server).stream_chat(ask("x"), GenerationParams(extra={"n": 3})))
    assert events == [
        TextDelta("Reply to: x"),
        Details({"replies": ["Reply to: x", "Reply 2 to: x", "Reply 3 to: x"]}),
        Usage(),
        Finish("stop"),
    ]


def test_the_wrong_number_of_replies_is_a_clear_error(server):
    server.fault("wrong_count")
    with pytest.raises(BadResponse) as err:
        echo(server, batch_size=4).complete([ask(str(i)) for i in range(4)], GenerationParams())
    assert str(err.value).startswith("The endpoint gave 3 replies for 4 conversations; expected 4.")

    server.fault("wrong_count")
    with pytest.raises(BadResponse) as err:
        echo(server).complete([ask("a")], GenerationParams(extra={"n": 2}))
    assert "gave 1 reply for 1 conversation × N=2; expected 2" in str(err.value)
    assert "grouped by conversation" in str(err.value)

    # A chat API merges the batch into one conversation: one reply for two.
    with pytest.raises(BadResponse) as err:
        together(server, batch_size=2).complete([ask("a"), ask("b")], GenerationParams())
    assert "gave 1 reply for 2 conversations" in str(err.value)
    assert "set Batch size to 1" in str(err.value)


def test_single_turn_sends_only_the_last_user_message(server):
    adapter = echo(server, multi_turn=False)
    assert adapter.complete([CONVERSATION], GenerationParams()) == [
        "Reply to: And neural networks?"
    ]
    assert server.requests[-1].json()["messages"] == [
        [{"role": "user", "content": "And neural networks?"}]
    ]
    assert "only the last user message" in custom_api.multi_turn_note({"multi_turn": False})
    assert custom_api.multi_turn_note({}) == ""

    echo(server).complete([CONVERSATION], GenerationParams())
    assert server.requests[-1].json()["messages"] == [flat(CONVERSATION)]


# --- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["rate_limit", "server_error"])
def test_retry_on_failure_only_when_enabled(server, fault):
    error = RateLimited if fault == "rate_limit" else ServerError
    server.fault(fault, times=2)
    assert echo(server, enable_retry=True).complete([ask("hi")], GenerationParams()) == [
        "Reply to: hi"
    ]
    assert len(server.requests) == 3

    server.reset()
    server.fault(fault, times=2)
    with pytest.raises(error):
        echo(server).complete([ask("hi")], GenerationParams())
    assert len(server.requests) == 1

    server.reset()
    server.fault(fault, times=3)  # max_retries=2: the third failure is final
    with pytest.raises(error):
        echo(server, enable_retry=True).complete([ask("hi")], GenerationParams())
    assert len(server.requests) == 3


def test_a_429_says_how_long_the_server_asked_to_wait(server):
    server.fault("rate_limit", retry_after=60)
    with pytest.raises(RateLimited) as err:
        echo(server, enable_retry=True).complete([ask("hi")], GenerationParams())
    assert "It asked to wait 60 s." in str(err.value)  # longer than max_retry_wait: not waited
    assert len(server.requests) == 1


@pytest.mark.parametrize(("enable_retry", "attempts"), [(True, 3), (False, 1)])
def test_connection_refused_is_retried_only_when_enabled(enable_retry, attempts):
    sent: list[httpx.Request] = []
    with httpx.Client(event_hooks={"request": [sent.append]}) as client:
        adapter = make(
            f"http://127.0.0.1:{free_port()}/generate", client=client, enable_retry=enable_retry
        )
        with pytest.raises(ConnectionFailed) as err:
            adapter.complete([ask("hi")], GenerationParams())
    assert "connection refused" in str(err.value)
    assert len(sent) == attempts


# --- faults ---------------------------------------------------------------------------------------


def test_faults_become_plain_errors(server):
    server.fault("html")
    with pytest.raises(ServerError) as err:
        echo(server).complete([ask("hi")], GenerationParams())
    assert "an HTML page: 502 Bad Gateway" in str(err.value)

    server.fault("not_json")
    with pytest.raises(BadResponse) as err:
        echo(server).complete([ask("hi")], GenerationParams())
    assert "instead of JSON" in str(err.value)

    server.fault("wrong_shape")
    with pytest.raises(BadResponse) as err:
        echo(server).complete([ask("hi")], GenerationParams())
    assert "got an object with keys result" in str(err.value)
    assert "Add a response expression" in str(err.value)

    server.fault("cut")
    with pytest.raises(StreamInterrupted):
        echo(server).complete([ask("hi")], GenerationParams())

    server.fault("slow", seconds=0.5)
    with pytest.raises(RequestTimedOut):
        echo(server, timeouts=Timeouts(read=0.1)).complete([ask("hi")], GenerationParams())


# --- preview and Test connection -----------------------------------------------------------------


def test_preview_shows_what_would_be_sent(server):
    adapter = together(server, multi_turn=False, headers={"X-Team": "eval"})
    preview = adapter.preview_request(CONVERSATION, GenerationParams(0.3, 99))
    assert preview == {
        "url": server.url + "/v1/chat/completions",
        "headers": {
            "Content-Type": "application/json;charset=UTF-8",
            "Accept": "application/json, text/plain, */*",
            "X-Team": "eval",
            "Authorization": f"Bearer {mask(TOKEN)}",
        },
        "standard_body": {
            "messages": [[{"role": "user", "content": "And neural networks?"}]],
            "N": 1,
            "seq_len": 99,
            "temperature": 0.3,
        },
        "body": {
            "model": "mistralai/Mistral-7B-Instruct-v0.3",
            "messages": [{"role": "user", "content": "And neural networks?"}],
            "max_tokens": 99,
            "temperature": 0.3,
            "n": 1,
        },
        "error": None,
    }
    assert server.requests == []  # a preview sends nothing


def test_test_connection_reports_every_layer_and_what_went_through(server):
    report = together(server).test_connection()
    assert report.ok, report.summary
    assert [s.layer for s in report.steps] == [
        "DNS",
        "Request transformation",
        "Connection",
        "Response transformation",
    ]
    assert report.info["request_body"]["model"] == "mistralai/Mistral-7B-Instruct-v0.3"
    assert report.info["request_body"]["messages"] == [{"role": "user", "content": "Say hi."}]
    assert report.info["raw_response"]["choices"][0]["message"]["content"] == "Echo: Say hi."
    assert report.info["transformed"] == ["Echo: Say hi."]
    assert report.summary == 'Got one reply: "Echo: Say hi.".'
    assert len(server.requests) == 1

    report = make(server.url + "/guardrail", response_type="boolean").test_connection()
    assert report.ok and [s.layer for s in report.steps] == ["DNS", "Connection", "Response shape"]
    assert report.info["request_body"] == report.info["standard_body"]
    assert report.info["transformed"] == [False]


def failed_layer(adapter: CustomAPIAdapter) -> tuple[str, str]:
    report = adapter.test_connection()
    assert not report.ok
    step = report.steps[-1]
    return step.layer, step.message


def test_test_connection_names_the_failing_layer(server):
    dns = make("http://no-such-host.invalid/generate")
    assert failed_layer(dns)[0] == "DNS"
    refused = make(f"http://127.0.0.1:{free_port()}/generate", enable_retry=True)
    assert failed_layer(refused)[0] == "Connection"
    server.fault("cut")
    assert failed_layer(echo(server)) == (
        "Connection",
        "The server closed the connection before the reply was complete.",
    )

    wrong_key = make(
        server.url + "/v1/chat/completions", preset="openai_chat", auth=Auth("bearer", "nope")
    )
    layer, message = failed_layer(wrong_key)
    assert layer == "Authentication" and "(401)" in message
    report = wrong_key.test_connection()
    assert "Invalid API key provided" in report.info["raw_response"]

    typo = make(
        server.url + "/v1/chat/completion", preset="openai_chat", auth=Auth("bearer", TOKEN)
    )
    assert failed_layer(typo)[0] == "Path"
    no_endpoint = make(
        server.url + "/serving-endpoints/no-such-endpoint/invocations",
        preset="databricks",
        auth=Auth("bearer", TOKEN),
    )
    layer, message = failed_layer(no_endpoint)
    assert layer == "Path" and "does not exist: no-such-endpoint" in message

    no_model = make(
        server.url + "/v1/chat/completions", preset="openai_chat", auth=Auth("bearer", TOKEN)
    )
    layer, message = failed_layer(no_model)  # $model is empty, so the body has no model
    assert layer == "Request transformation"
    assert "you must provide a model parameter" in message

    failing = echo(server, request_expression='{"n": $number("many")}')
    assert failed_layer(failing)[0] == "Request transformation"

    server.fault("not_json")
    layer, _ = failed_layer(echo(server))
    assert layer == "Response shape"
    report = echo(server).test_connection()
    assert report.ok  # the fault was used up

    server.fault("not_json")
    report = echo(server).test_connection()
    assert report.info["raw_response"] == "OK, request received."

    server.fault("wrong_shape")
    layer, message = failed_layer(together(server))
    assert layer == "Response transformation"
    assert "gave 0 replies for 1 conversation" in message

    server.fault("wrong_shape")
    layer, message = failed_layer(echo(server))
    assert layer == "Response shape" and "got an object with keys result" in message

    layer, message = failed_layer(echo(server, response_type="maybe"))
    assert layer == "Settings" and "Response type: Response type must be string or" in message
