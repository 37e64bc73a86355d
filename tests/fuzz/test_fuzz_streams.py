"""Stream readers and reply parsers of the HTTP adapters: OpenAI-compatible SSE and
/chat/completions replies, TGI /generate_stream and /generate, the custom API's replies.

* Chunking: a valid stream cut into random pieces — anywhere, inside a UTF-8 character or a
  CRLF too — gives the same events as the stream fed whole. The bytes go through
  httpx.MockTransport here, and only here: it hands the SSE decoder exactly the chunks drawn,
  where a socket would let TCP merge or split them and the property would test less.
* Garbage: everything else is served by a real HTTP/1.1 server on 127.0.0.1 (tests/fuzz/
  server.py) — random statuses, content types, framings (chunked, Content-Length, read to
  close, cut mid-body) and bodies — so httpx's own framing and error paths run too. Every
  exchange ends in well-typed events or a typed InferenceError, within the read timeout.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
from hypothesis import example, given
from hypothesis import strategies as st

from core.inference.custom_api import PRESETS, CustomAPIAdapter
from core.inference.openai_compat import OpenAICompatAdapter
from core.inference.prompts import BUILTIN_TEMPLATES, StopFilter
from core.inference.target import Auth, Target
from core.inference.tgi import TGIAdapter
from core.inference.types import (
    Finish,
    GenerationParams,
    InferenceError,
    Message,
    Reply,
    StreamEvent,
    TextDelta,
    Usage,
)
from core.settings import Timeouts
from tests.fuzz.server import Script, ScriptedServer
from tests.fuzz.strategies import (
    assert_events_well_typed,
    assert_plain_error,
    budget,
    deep_json,
    is_count,
    json_values,
    odd_text,
    to_json_bytes,
)

KEY = "sk-fuzz-0123456789abcdefghij"
TIMEOUTS = Timeouts(connect=2.0, read=5.0, write=5.0, pool=5.0)
CHAT = [Message("system", "Be brief."), Message("user", "Hi")]

# --- building streams ---------------------------------------------------------------------------

pieces = st.one_of(st.text(max_size=12), odd_text)
eols = st.sampled_from(["\n", "\r\n", "\r"])


def sse(payloads: Iterable[str], eol: str, space: bool, comments: Iterable[bool] = ()) -> bytes:
    out = []
    for payload, comment in zip(payloads, [*comments, *[False] * 100], strict=False):
        if comment:
            out.append(f": ping{eol}{eol}")
        out.append(f"data:{' ' if space else ''}{payload}{eol}{eol}")
    return "".join(out).encode()


@st.composite
def openai_streams(draw: st.DrawFn) -> tuple[bytes, str, str, Usage | None]:
    texts = draw(st.lists(pieces, max_size=8))
    ascii_only = draw(st.booleans())
    chunks: list[dict[str, Any]] = []
    if draw(st.booleans()):
        chunks.append({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    chunks += [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}
        for t in texts
    ]
    finish = draw(st.sampled_from(["stop", "length"]))
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    usage = None
    if draw(st.booleans()):
        usage = Usage(draw(st.integers(0, 9999)), draw(st.integers(0, 9999)))
        chunks.append(
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                },
            }
        )
    payloads = [json.dumps(c, ensure_ascii=ascii_only) for c in chunks]
    if draw(st.booleans()):
        payloads.append("[DONE]")
    comments = draw(st.lists(st.booleans(), max_size=len(payloads)))
    raw = sse(payloads, draw(eols), draw(st.booleans()), comments)
    return raw, "".join(texts), finish, usage


@st.composite
def tgi_streams(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """(bytes, template name, the text the adapter should show)."""
    template = draw(st.sampled_from(sorted(BUILTIN_TEMPLATES)))
    stops = BUILTIN_TEMPLATES[template].stop
    tokens = draw(
        st.lists(
            st.tuples(st.one_of(pieces, st.sampled_from(stops), st.just("User")), st.booleans()),
            max_size=8,
        )
    )
    events: list[dict[str, Any]] = [
        {
            "index": i,
            "token": {"id": i, "text": text, "logprob": -0.5, "special": special},
            "generated_text": None,
            "details": None,
        }
        for i, (text, special) in enumerate(tokens)
    ]
    shown = "".join(text for text, special in tokens if not special)
    last: dict[str, Any] = {
        "index": len(tokens),
        "token": {"id": 0, "text": "", "logprob": 0.0, "special": True},
        "generated_text": shown,
        "details": draw(
            st.one_of(
                st.none(),
                st.builds(
                    lambda reason, n: {
                        "finish_reason": reason,
                        "generated_tokens": n,
                        "input_length": 3,
                    },
                    st.sampled_from(["eos_token", "length", "stop_sequence"]),
                    st.integers(1, 99),
                ),
            )
        ),
    }
    ascii_only = draw(st.booleans())
    payloads = [json.dumps(e, ensure_ascii=ascii_only) for e in [*events, last]]
    raw = sse(payloads, draw(eols), draw(st.booleans()))
    return raw, template, StopFilter(stops).apply(shown)


@st.composite
def cut_into_pieces(draw: st.DrawFn, raw: bytes) -> list[bytes]:
    if draw(st.integers(0, 9)) == 0:
        return [raw[i : i + 1] for i in range(len(raw))]  # one byte at a time
    cuts = sorted(draw(st.sets(st.integers(0, len(raw)), max_size=24)))
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# --- running adapters ---------------------------------------------------------------------------


def mock_client(chunks: list[bytes], content_type: str = "text/event-stream") -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=iter(chunks))

    return httpx.Client(transport=httpx.MockTransport(handler))


def target(kind: str, base_url: str, **settings: Any) -> Target:
    return Target(
        kind=kind,
        base_url=base_url,
        model="m",
        auth=Auth("bearer", KEY),
        settings=settings,
        timeouts=TIMEOUTS,
        max_retries=0,
    )


def consume(events: Iterator[StreamEvent]) -> tuple[list[StreamEvent], InferenceError | None]:
    got: list[StreamEvent] = []
    try:
        for event in events:
            got.append(event)
    except InferenceError as err:
        assert_plain_error(err)
        assert KEY not in err.message and KEY not in err.detail
        return got, err
    return got, None


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# --- chunking (MockTransport) -------------------------------------------------------------------


@budget(250)
@given(openai_streams(), st.data())
@example((b'data: {"choices":[{"delta":{"content":"\xc3\xa9"},"finish_reason":"stop"}]}\r\n\r\n',
          "é", "stop", None), None)  # fmt: skip
def test_openai_stream_reads_the_same_however_it_is_chunked(
    stream: tuple[bytes, str, str, Usage | None], data: st.DataObject | None
) -> None:
    raw, text, finish, usage = stream
    chunks = data.draw(cut_into_pieces(raw)) if data else [raw[:1], raw[1:-2], raw[-2:-1], raw[-1:]]
    adapter = OpenAICompatAdapter(
        target("openai_compat", "http://fuzz.test/v1"), mock_client([raw])
    )
    whole, err = consume(adapter.stream_chat(CHAT, GenerationParams()))
    assert err is None
    adapter = OpenAICompatAdapter(
        target("openai_compat", "http://fuzz.test/v1"), mock_client(chunks)
    )
    cut, err = consume(adapter.stream_chat(CHAT, GenerationParams()))
    assert err is None
    assert cut == whole
    assert text_of(whole) == text
    assert Finish(finish) in whole
    assert usage is None or usage in whole
    assert_events_well_typed(whole)


@budget(250)
@given(tgi_streams(), st.data())
def test_tgi_stream_reads_the_same_however_it_is_chunked(
    stream: tuple[bytes, str, str], data: st.DataObject
) -> None:
    raw, template, shown = stream
    chunks = data.draw(cut_into_pieces(raw))

    def events(client: httpx.Client) -> list[StreamEvent]:
        adapter = TGIAdapter(target("tgi", "http://fuzz.test", chat_template=template), client)
        got, err = consume(adapter.stream_chat(CHAT, GenerationParams()))
        assert err is None
        return got

    whole = events(mock_client([raw]))
    assert events(mock_client(chunks)) == whole
    assert text_of(whole) == shown
    assert_events_well_typed(whole)


# --- garbage (the scripted server on 127.0.0.1) ---------------------------------------------------

sse_lines = st.one_of(
    json_values.map(lambda v: "data: " + json.dumps(v)),
    odd_text.map(lambda t: "data: " + t),
    st.sampled_from(
        [
            "data: [DONE]",
            "event: error",
            ": ping",
            "retry: 10",
            "id: 1",
            "",
            'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}',
            'data: {"choices":[{"delta":{"content":5},"finish_reason":{"a":1}}],"usage":{"prompt_tokens":"9"}}',
            'data: {"choices":[{"finish_reason":["x"]}]}',
            'data: {"token":{"text":"x","special":false},"generated_text":null}',
            'data: {"token":{"text":"x"},"generated_text":"x","details":{"finish_reason":[1],"input_length":"3"}}',
            'data: {"token":{"text":"x"},"generated_text":"x","details":"none"}',
            'data: {"error":"boom","error_type":"validation"}',
            'data: {"error":{"message":"bad","status":500}}',
        ]
    ),
    odd_text,
    deep_json.map(lambda b: "data: " + b.decode()),
)


@st.composite
def garbage_scripts(draw: st.DrawFn, stream: bool) -> Script:
    if stream and draw(st.integers(0, 3)):
        lines = draw(st.lists(sse_lines, max_size=10))
        body = draw(eols).join(lines).encode() + draw(st.sampled_from([b"", b"\n\n", b"\r\n\r\n"]))
        content_type = draw(
            st.sampled_from(["text/event-stream", "text/event-stream; charset=utf-8"])
        )
    else:
        body = draw(
            st.one_of(
                json_values.map(to_json_bytes),
                st.binary(max_size=80),
                deep_json,
                st.sampled_from([b"", b"<html><title>Bad gateway</title></html>"]),
            )
        )
        content_type = draw(
            st.sampled_from(
                [
                    "application/json",
                    "text/plain",
                    "text/html",
                    "",
                    "application/json; x=text/event-stream",
                ]
            )
        )
    cuts = sorted(draw(st.sets(st.integers(0, len(body)), max_size=4)))
    bounds = [0, *cuts, len(body)]
    return Script(
        status=draw(
            st.one_of(
                st.just(200),
                st.just(200),
                st.sampled_from([201, 400, 401, 403, 404, 408, 413, 422, 429, 500, 502, 503]),
            )
        ),
        content_type=content_type,
        chunks=tuple(body[a:b] for a, b in itertools.pairwise(bounds)),
        framing=draw(st.sampled_from(["chunked", "chunked", "length", "close", "cut"])),
        headers=draw(
            st.dictionaries(
                st.sampled_from(["x-prompt-tokens", "x-generated-tokens", "retry-after"]),
                st.sampled_from(["12", "abc", "", "1e3", "-1", "Wed, 21 Oct 2015 07:28:00 GMT"]),
                max_size=2,
            )
        ),
    )


def served(server: ScriptedServer, script: Script, run: Callable[[], Any]) -> Any:
    server.script = script
    start = time.monotonic()
    try:
        return run()
    finally:
        assert time.monotonic() - start < TIMEOUTS.read + 2, "the exchange hung"


@budget(250)
@given(garbage_scripts(stream=True), st.sampled_from(["openai_compat", "tgi"]))
def test_any_stream_ends_in_events_or_a_typed_error(
    scripted_server: ScriptedServer, fuzz_client: httpx.Client, script: Script, kind: str
) -> None:
    if kind == "tgi":
        adapter: Any = TGIAdapter(target("tgi", scripted_server.root), fuzz_client)
    else:
        adapter = OpenAICompatAdapter(
            target("openai_compat", scripted_server.root + "/v1"), fuzz_client
        )
    events, _ = served(
        scripted_server, script, lambda: consume(adapter.stream_chat(CHAT, GenerationParams()))
    )
    assert_events_well_typed(events)


def assert_reply(reply: Reply) -> None:
    assert isinstance(reply.text, str)
    assert reply.finish_reason is None or isinstance(reply.finish_reason, str)
    if reply.usage is not None:
        assert is_count(reply.usage.prompt_tokens) and is_count(reply.usage.completion_tokens)


def chat_or_error(run: Callable[[], Reply]) -> None:
    try:
        reply = run()
    except InferenceError as err:
        assert_plain_error(err)
        assert KEY not in err.message and KEY not in err.detail
    else:
        assert_reply(reply)


openai_replies = st.builds(
    lambda content, reason, usage: {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, **reason}],
        **usage,
    },
    st.one_of(odd_text, json_values),
    st.one_of(st.just({}), st.fixed_dictionaries({"finish_reason": json_values})),
    st.one_of(st.just({}), st.fixed_dictionaries({"usage": json_values})),
)


def _tgi_reply(text: Any, details: dict[str, Any], wrap: bool) -> Any:
    reply = {"generated_text": text, **details}
    return [reply] if wrap else reply  # POST / wraps it in a list


tgi_replies = st.builds(
    _tgi_reply,
    st.one_of(odd_text, json_values),
    st.one_of(st.just({}), st.fixed_dictionaries({"details": json_values})),
    st.booleans(),
)


@st.composite
def reply_scripts(draw: st.DrawFn, shaped: st.SearchStrategy[Any]) -> Script:
    script = draw(garbage_scripts(stream=False))
    if draw(st.booleans()):  # a reply of about the right shape, served well
        body = to_json_bytes(draw(shaped))
        script = Script(200, "application/json", (body,), "length", script.headers)
    return script


@budget(200)
@given(reply_scripts(openai_replies))
def test_openai_reply_parses_or_gives_a_typed_error(
    scripted_server: ScriptedServer, fuzz_client: httpx.Client, script: Script
) -> None:
    adapter = OpenAICompatAdapter(
        target("openai_compat", scripted_server.root + "/v1"), fuzz_client
    )
    served(
        scripted_server,
        script,
        lambda: chat_or_error(lambda: adapter.chat(CHAT, GenerationParams())),
    )


@budget(200)
@given(reply_scripts(tgi_replies))
@example(Script(200, "application/json", (b'{"generated_text": "x"}',), "length",
                {"x-prompt-tokens": "abc"}))  # fmt: skip
@example(Script(200, "application/json",
                (b'{"generated_text": "x", "details": {"finish_reason": ["a"]}}',), "length"))  # fmt: skip
def test_tgi_reply_parses_or_gives_a_typed_error(
    scripted_server: ScriptedServer, fuzz_client: httpx.Client, script: Script
) -> None:
    adapter = TGIAdapter(target("tgi", scripted_server.root), fuzz_client)
    params = GenerationParams(extra={"stream": False})
    served(scripted_server, script, lambda: chat_or_error(lambda: adapter.chat(CHAT, params)))


@budget(150)
@given(
    reply_scripts(st.one_of(st.lists(odd_text, max_size=2), openai_replies, tgi_replies)),
    st.sampled_from(sorted(PRESETS)),
    st.sampled_from(["string", "boolean"]),
)
def test_custom_api_reply_parses_or_gives_a_typed_error(
    scripted_server: ScriptedServer,
    fuzz_client: httpx.Client,
    script: Script,
    preset: str,
    response_type: str,
) -> None:
    settings = {
        "request_expression": PRESETS[preset].request_expression,
        "response_expression": PRESETS[preset].response_expression,
        "response_type": response_type,
    }
    adapter = CustomAPIAdapter(
        target("custom_api", scripted_server.root + "/api", **settings), fuzz_client
    )
    served(
        scripted_server,
        script,
        lambda: chat_or_error(lambda: adapter.chat(CHAT, GenerationParams())),
    )
