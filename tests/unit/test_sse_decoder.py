"""core.inference.http's SSE decoder (SSEDecoder, iter_sse) and its fast JSON `loads`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.inference.http import ServerSentEvent, SSEDecoder, iter_sse, loads


def decode(*pieces: str) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [e for piece in pieces for e in decoder.feed(piece)]
    return events + decoder.end()


def datas(*pieces: str) -> list[str]:
    return [e.data for e in decode(*pieces)]


def every_split(text: str) -> Iterator[tuple[str, ...]]:
    """The text whole, cut in two at every position, and one character at a time."""
    yield (text,)
    for i in range(1, len(text)):
        yield text[:i], text[i:]
    yield tuple(text)


# --- the format ---------------------------------------------------------------------------


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings(eol: str) -> None:
    stream = f"data: one{eol}{eol}data: two{eol}data: more{eol}{eol}"
    for pieces in every_split(stream):
        assert datas(*pieces) == ["one", "two\nmore"], pieces


def test_mixed_line_endings_in_one_stream() -> None:
    assert datas("data: a\r\n\r\ndata: b\r\rdata: c\n\n") == ["a", "b", "c"]


def test_data_with_or_without_the_space() -> None:
    assert datas("data:{}\n\ndata: {}\n\ndata:  two spaces\n\n") == ["{}", "{}", " two spaces"]


def test_comments_are_skipped() -> None:
    stream = ": ping\n\n:\n\ndata: a\n: a comment inside an event\ndata: b\n\n: bye\n"
    assert datas(stream) == ["a\nb"]


def test_multi_line_data_and_empty_data_lines() -> None:
    assert datas("data: a\ndata:\ndata: c\n\n") == ["a\n\nc"]
    assert datas("data\n\n") == [""]  # a field name alone is a field with an empty value
    assert datas("data:\n\n") == [""]


def test_event_names_reset_after_each_event() -> None:
    events = decode("event: error\ndata: {}\n\ndata: next\n\nevent:ping\ndata:x\n\n")
    assert [(e.event, e.data) for e in events] == [
        ("error", "{}"),
        ("message", "next"),
        ("ping", "x"),
    ]


def test_an_event_without_data_is_not_dispatched() -> None:
    assert decode("event: ping\n\nid: 7\n\nretry: 10\n\n") == []


def test_id_persists_and_retry_is_passed_along() -> None:
    events = decode(
        "id: 1\ndata: a\n\ndata: b\n\nid: 2\0x\nretry: 1500\ndata: c\n\nretry: x\ndata: d\n\n"
    )
    assert [(e.data, e.id, e.retry) for e in events] == [
        ("a", "1", None),
        ("b", "1", None),  # the last event id carries on
        ("c", "1", 1500),  # an id with NUL is ignored
        ("d", "1", None),  # retry must be digits
    ]


def test_unknown_fields_are_ignored() -> None:
    assert datas("foo: bar\ndata: a\nDATA: b\ndata : c\n\n") == ["a"]


def test_a_final_event_without_the_blank_line_is_dispatched_at_the_end() -> None:
    for stream in (
        "data: a\n\ndata: [DONE]\n",
        "data: a\n\ndata: [DONE]",
        "data: a\n\ndata: [DONE]\r",
    ):
        for pieces in every_split(stream):
            assert datas(*pieces) == ["a", "[DONE]"], pieces


def test_nothing_pending_at_the_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("data: a\n\n") == [ServerSentEvent("a")]
    assert decoder.end() == []
    assert SSEDecoder().end() == []


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("data: a\n") == []
    assert decoder.feed("\ndata: b") == [ServerSentEvent("a")]
    assert decoder.feed("\n\r") == [ServerSentEvent("b")]
    assert decoder.feed("\n") == []  # the LF of that CRLF, not a second blank line
    assert decoder.feed("data: c\n\n") == [ServerSentEvent("c")]


def test_a_leading_bom_is_dropped_once() -> None:
    assert datas("\ufeffdata: a\n\n") == ["a"]
    assert datas("", "\ufeffdata: a\n\n") == ["a"]
    assert datas("\ufeff\ufeffdata: a\n\ndata: b\n\n") == ["b"]  # a second BOM is a field name


def test_only_cr_and_lf_end_lines() -> None:
    text = "a\u2028b\u0085c\x0cd\x1ce"  # str.splitlines() would cut at each of these
    assert datas(f"data: {text}\n\n") == [text]


def test_a_realistic_openai_stream_at_every_cut() -> None:
    chunks = [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in ("Hé", " 世界", " 🙂")]
    stream = ": keep-alive\r\n\r\n" + "".join(
        f"data: {json.dumps(c, ensure_ascii=False)}\r\n\r\n" for c in chunks
    )
    stream += "data: [DONE]\r\n\r\n"
    want = [json.dumps(c, ensure_ascii=False) for c in chunks] + ["[DONE]"]
    for pieces in every_split(stream):
        assert datas(*pieces) == want


# --- against a line-at-a-time reading of the spec ------------------------------------------


def reference(stream: str) -> list[tuple[str, str, str, int | None]]:
    """The spec's algorithm, one line at a time (plus dispatch at the end, as we do)."""
    if stream.startswith("\ufeff"):
        stream = stream[1:]
    lines = stream.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()  # the text ended with a line break: no partial last line
    events = []
    data: list[str] | None = None
    event, last_id, retry = "", "", None
    for line in [*lines, ""]:
        if line == "":
            if data is not None:
                events.append(("\n".join(data), event or "message", last_id, retry))
                retry = None
            data, event = None, ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data = [*(data or []), value]
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
    return events


LINE = st.sampled_from(
    ["data: x", "data:y", "data:", "data", "data: ü 世", "event: e", "event:", "id: 3", "id",
     "retry: 5", "retry: no", ": c", ":", "other: z", "", "", ""]
)  # fmt: skip
EOL = st.sampled_from(["\n", "\r\n", "\r"])


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.tuples(LINE, EOL), max_size=14),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_any_stream_cut_anywhere_matches_the_spec(
    lines: list[tuple[str, str]], cuts: list[int]
) -> None:
    stream = "".join(line + eol for line, eol in lines)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    got = [(e.data, e.event, e.id, e.retry) for e in decode(*pieces)]
    assert got == reference(stream)


# --- over httpx ---------------------------------------------------------------------------


def response(*reads: bytes) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=iter(reads),
        request=httpx.Request("POST", "http://test/v1/chat/completions"),
    )


def test_iter_sse_decodes_utf8_split_between_network_reads() -> None:
    raw = "data: héllo 世界\r\n\r\ndata: [DONE]\r\n\r\n".encode()
    for i in range(1, len(raw)):
        events = list(iter_sse(response(raw[:i], raw[i:])))
        assert [e.data for e in events] == ["héllo 世界", "[DONE]"], i


def test_iter_sse_dispatches_a_last_event_the_server_did_not_end() -> None:
    events = list(iter_sse(response(b"event: error\ndata: {}\n\ndata: [DONE]")))
    assert [(e.event, e.data) for e in events] == [("error", "{}"), ("message", "[DONE]")]
    assert events[0].json() == {}


# --- loads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ['{"a": [1, 2.5, null, true]}', "[]", '"s"', "3", " {} ", "{}\n", "NaN", '{"a": "\\u00e9"}'],
)
def test_loads_is_json_loads(text: str) -> None:
    assert repr(loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize(
    "text", ["", "{", '{"a": 1} x', "[DONE]", "\ufeff{}", '{"a": "\\q"}', "{} {}"]
)
def test_loads_fails_like_json_loads(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


# --- after the last event: the connection is kept ------------------------------------------


def _client_ports(client: httpx.Client) -> list[int]:
    ports: list[int] = []

    def hook(response: httpx.Response) -> None:
        stream = response.extensions["network_stream"]
        ports.append(stream.get_extra_info("client_addr")[1])

    client.event_hooks["response"] = [hook]
    return ports


def test_a_finished_stream_leaves_its_connection_for_the_next_request() -> None:
    from core.inference.openai_compat import OpenAICompatAdapter
    from core.inference.target import Target
    from core.inference.types import GenerationParams, Message, TextDelta
    from tests.servers.openai_server import OpenAITestServer

    server = OpenAITestServer().start()
    try:
        with httpx.Client() as client:
            ports = _client_ports(client)
            adapter = OpenAICompatAdapter(
                Target(kind="openai_compat", base_url=server.url, model="test-model"), client
            )
            for _ in range(3):
                events = list(adapter.stream_chat([Message("user", "hi")], GenerationParams()))
                assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Echo: hi"
    finally:
        server.stop()
    assert len(ports) == 3 and len(set(ports)) == 1, ports  # one connection, no new handshakes


def test_a_server_that_keeps_the_stream_open_after_done_costs_a_moment_not_the_timeout() -> None:
    import socket
    import threading
    import time

    from core.inference.http import DRAIN_SECONDS
    from core.inference.openai_compat import OpenAICompatAdapter
    from core.inference.target import Target
    from core.inference.types import Finish, GenerationParams, Message, TextDelta

    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:  # sends the whole reply, then neither ends the body nor closes
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n"
            )
            done.wait(10)

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    try:
        with httpx.Client() as client:
            adapter = OpenAICompatAdapter(
                Target(kind="openai_compat", base_url=url, model="m"), client
            )
            started = time.perf_counter()
            events = list(adapter.stream_chat([Message("user", "x")], GenerationParams()))
            took = time.perf_counter() - started
    finally:
        done.set()
        listener.close()
    assert events == [TextDelta("hi"), Finish("stop")]
    assert took < DRAIN_SECONDS + 2, took
