"""The fault matrix (issue 8 §1): every connection kind × every fault, end to end.

Each cell makes a card with `core.catalog` (short connect and read timeouts on its
connection), breaks one thing, runs one turn through `core.chat.stream_turn` over real HTTP to
the test servers on 127.0.0.1 (or a local file, for local_gguf), and checks:

  * the person gets one clear message: the expected InferenceError kind, key words naming the
    cause and what to do, no Python exception text, no sentence twice, no secret;
  * the prompt and any partial reply are saved (the user row; the assistant row with its
    status, the partial text, error kind, message and detail for the Details block);
  * exactly one UsageEvent for the turn, with the turn's status and error kind;
  * retries only where allowed: how many requests the server received and how long the HTTP
    seam asked to wait between them (Retry-After, else exponential backoff);
  * the app keeps working: once the fault is gone, the next turn in the same conversation on
    the same workspace succeeds.

Waits between retries are recorded at the seam and shortened to SHORT_WAIT so the matrix stays
fast; `test_retry_after_is_really_waited_for` checks once that a Retry-After is really slept.

`python -m tests.integration.reliability_report` runs this file and writes docs/reliability.md
from the results; the tables there come from FAULTS, KINDS, expected() and NOT_APPLICABLE.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from core import catalog
from core.catalog import CardView, ModelDraft, ProviderDraft
from core.chat import TurnRequest, TurnResult, collect, stream_turn
from core.inference import http, local_gguf, openai_compat
from core.inference.custom_api import PRESETS
from core.workspace import Workspace
from tests.conftest import free_port
from tests.integration.core_helpers import message_rows, usage_events
from tests.servers import base
from tests.servers.custom_api_server import CustomAPITestServer
from tests.servers.openai_server import OpenAITestServer
from tests.servers.tgi_server import DEFAULT_REPLY, TGITestServer
from tests.servers.tgi_server import HTML_PAGE as NGINX_502

try:  # the xinference kind is new: a column only when its adapter and test server are there
    from core.inference.registry import kinds as _known_kinds
    from tests.servers.xinference_server import XinferenceTestServer

    if "xinference" not in _known_kinds():  # pragma: no cover
        raise ImportError("the xinference kind is not registered")
except ImportError:  # pragma: no cover
    XinferenceTestServer = None  # type: ignore[assignment,misc]

PROMPT = "hello there world"
CONNECT_TIMEOUT = 0.3  # the cards' connect timeout (s)
READ_TIMEOUT = 0.5  # the cards' read timeout: the longest silence allowed (s)
SLOW = 2.0  # how long a slow or stalled test server stays silent (s)
MAX_RETRIES = 2  # PLUGBOARD_MAX_RETRIES for every workspace here
BASE_DELAY = 0.5  # the HTTP seam's first backoff (RetryPolicy.base_delay, RETRY_BASE_DELAY)
SHORT_WAIT = 0.02  # what a recorded wait really sleeps in the matrix
BIG = 5_000_000  # bytes in the "5 MB reply"
TOKEN = "tok-together-0123456789abcdef"  # the Together-like API's bearer token
DEAD_HOST = "plugboard-fault.invalid"  # RFC 6761: never resolves

# Rows of the matrix, in the order of docs/reliability.md: id -> what goes wrong.
FAULTS: dict[str, str] = {
    "refused": "Connection refused (nothing listens on the port)",
    "dns": f"DNS failure (`{DEAD_HOST}`)",
    "connect_timeout": "Connect timeout (a listener whose backlog is full never completes it)",
    "read_timeout": "Read timeout before the first byte",
    "stall": "Read timeout in the middle of the stream (or body)",
    "cut": "Stream cut without its end (the connection drops mid-reply)",
    "truncated": "Stream ends cleanly but without its last event",
    "http_401": "401 Unauthorized",
    "http_403": "403 Forbidden",
    "http_404": "404 (wrong path or model name)",
    "http_4xx": "400/422 with the server's message",
    "http_429": "429 with Retry-After: 1",
    "http_500": "500",
    "http_503": "503 with Retry-After: 0",
    "html": "An HTML error page (502 from a proxy)",
    "not_json": "A 200 body (or stream event) that is not JSON",
    "wrong_shape": "JSON of the wrong shape",
    "error_event": "An error inside a 200 reply (an error event mid-stream)",
    "empty": "An empty reply",
    "large": "A reply of 5 MB",
}
LOCAL_FAULTS: dict[str, str] = {
    "missing_file": "Model file missing (moved or deleted after the card was saved)",
    "corrupt_file": "Model file corrupt (a truncated GGUF)",
    "context_overflow": "Prompt longer than the model's context",
}
# Columns: id -> label. custom_api appears twice: its OpenAI-style preset (JSONata both ways,
# "Retry on failure" on) and passthrough (DynamoEval's standard format, retry off).
KINDS: dict[str, str] = {
    "openai_compat": "openai_compat",
    "tgi": "tgi",
    "custom_openai": "custom_api: OpenAI-style preset, retry on",
    "custom_passthrough": "custom_api: passthrough, retry off",
    "xinference": "xinference (endpoint auto)",
    "local_gguf": "local_gguf",
}
if XinferenceTestServer is None:  # pragma: no cover
    del KINDS["xinference"]
REMOTE_KINDS = tuple(k for k in KINDS if k != "local_gguf")
XINFERENCE_UID = "qwen2.5-instruct"
XINFERENCE_KEY = "sk-xinference-0123456789abcdef"
NO_SERVER = frozenset({"refused", "dns", "connect_timeout"})  # nothing reaches a server

# Cells that cannot exist, with the reason (shown in docs/reliability.md).
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    **{
        (kind, "truncated"): "one JSON body, no stream: a body cut short is the 'cut' row, "
        "a complete body of the wrong kind the 'not JSON' row"
        for kind in ("custom_openai", "custom_passthrough")
    },
    **{("local_gguf", fault): "no network: the model file is read in-process" for fault in FAULTS},
    **{(kind, fault): "local files only" for kind in REMOTE_KINDS for fault in LOCAL_FAULTS},
}

FORBIDDEN = (
    "Traceback",
    "KeyError",
    "NoneType",
    "TypeError",
    "ValueError",
    "AttributeError",
    "IndexError",
    "Exception",
    "httpx",
    "httpcore",
    "ProtocolError",
    "ReadTimeout",
    "ConnectTimeout",
    "ConnectError",
    "object at 0x",
    "<html",
    "<!doctype",
    "Something unexpected",
)


# --- what each cell expects ---------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    kind: str  # the InferenceError kind, or "ok" when the turn should succeed
    words: tuple[str, ...] = ()  # must be in the message (case-insensitive): cause, remedy
    retried: bool = False  # retried before the first byte, where the kind retries at all
    wait: float | None = None  # the Retry-After each retry waits; None: exponential backoff
    partial: bool = False  # the text that streamed before the fault is kept
    sent: int | None = None  # inference requests the server gets, if not 1 + retries

    @property
    def status(self) -> str:
        return "ok" if self.kind == "ok" else "error"


TRY_AGAIN = "try again"


def expected(kind: str, fault: str) -> Expect:
    """What the cell (kind, fault) must give; per-kind differences are spelled out here."""
    streams = kind in ("openai_compat", "tgi", "xinference")
    custom = kind.startswith("custom")
    common: dict[str, Expect] = {
        "refused": Expect(
            "connection", ("connection refused", "is the model server running"), retried=True
        ),
        "dns": Expect("connection", (f"'{DEAD_HOST}'", "dns lookup failed", "check the spelling")),
        "connect_timeout": Expect(
            "timeout",
            ("could not connect", f"within {CONNECT_TIMEOUT:g} s", "check that the server"),
            retried=True,
        ),
        "read_timeout": Expect(
            "timeout", (f"stopped answering for {READ_TIMEOUT:g} s", "raise the read timeout")
        ),
        "stall": Expect(
            "timeout",
            (f"stopped answering for {READ_TIMEOUT:g} s", "raise the read timeout"),
            partial=streams,
        ),
        "cut": Expect(
            "interrupted",
            ("closed the connection before the reply was complete",),
            partial=streams,
        ),
        "truncated": Expect(
            "interrupted", ("stopped before", "what arrived is kept"), partial=True
        ),
        "http_401": Expect("auth", ("rejected the api key (401)", "check the key in edit")),
        "http_403": Expect("auth", ("refused access (403)", "not be allowed to use this model")),
        "http_404": Expect("not_found", ("(404)", "check the endpoint url", "model name")),
        "http_4xx": Expect("bad_request", ("rejected the request",)),
        "http_429": Expect(
            "rate_limited",
            ("rate limiting requests (429)", "wait 1 s", "wait a moment and try again"),
            retried=True,
            wait=1.0,
        ),
        "http_500": Expect("server", ("internal error (500)", "try again later"), retried=True),
        "http_503": Expect(
            "server",
            ("unavailable or still loading (503)", "try again shortly"),
            retried=True,
            wait=0.0,
        ),
        "html": Expect(
            "server",
            ("internal error (502)", "an html page: 502 bad gateway", "try again later"),
            retried=True,
        ),
        "not_json": Expect("bad_response", ("not json",)),
        "wrong_shape": Expect("bad_response", ()),
        "error_event": Expect("server", ("the model crashed while generating",), partial=streams),
        "empty": Expect("ok"),
        "large": Expect("ok"),
    }
    expect = common[fault]
    # The server's own words, where the cell has some.
    said = {
        ("openai_compat", "http_4xx"): ("(400)", "maximum context length is 4096 tokens"),
        ("tgi", "http_4xx"): ("(422)", "`inputs` must have less than 1024 tokens"),
        ("custom_openai", "http_4xx"): ("(400)", "max_tokens must be at most 4096"),
        ("custom_passthrough", "http_4xx"): ("(422)", "body.seq_len: ensure this value"),
        ("openai_compat", "http_403"): ("not allowed to sample from this model",),
        ("tgi", "http_403"): ("this token cannot use this endpoint",),
        ("custom_openai", "http_401"): ("invalid api key provided",),
        ("custom_passthrough", "http_401"): ("not authenticated",),
        ("openai_compat", "http_404"): ("the model `gpt-nope` does not exist",),
        ("openai_compat", "not_json"): ("the stream carried something that is not json",),
        ("tgi", "not_json"): ("the stream carried something that is not json",),
        ("openai_compat", "wrong_shape"): ("no chunk had choices", "openai-compatible endpoint"),
        ("tgi", "wrong_shape"): ("had no token", "is this a tgi"),
        ("tgi", "error_event"): ("cuda out of memory",),
    }.get((kind, fault), ())
    if kind == "tgi" and fault == "error_event":
        expect = replace(expect, words=("tgi failed while generating", TRY_AGAIN))
    if custom and fault == "error_event":
        expect = replace(expect, words=("answered with an error instead of a reply", TRY_AGAIN))
        said = ("the model crashed while generating",)
    if custom and fault == "not_json":
        expect = replace(expect, words=())
        said = ("instead of json", "check that the url points at the model api")
    if custom and fault == "wrong_shape":
        said = (
            ("found nothing in the reply", "check the field names")
            if kind == "custom_openai"
            else ("got an object", "add a response expression")
        )
    if kind == "xinference":
        expect, said = _xinference(fault, expect, said)
    return replace(expect, words=expect.words + said)


def _xinference(fault: str, expect: Expect, said: tuple[str, ...]) -> tuple[Expect, tuple]:
    """Xinference describes the card's UID (GET /v1/models/{uid}) before each turn, then
    chats through the OpenAI-compatible route; a failed description ends the turn."""
    if fault == "http_401":
        return replace(expect, words=("rejected the api key (401)",), sent=0), (
            "not authenticated",
            "check the api key",
        )
    if fault == "http_404":
        return replace(expect, words=(f"'{XINFERENCE_UID}-nope' is not running",), sent=0), (
            f"running now: {XINFERENCE_UID}",
            "use the uid of a running model",
        )
    return expect, {
        "http_403": ("this key may not use this model",),
        "http_4xx": ("(422)", "body.max_tokens: ensure this value"),
        "not_json": ("the stream carried something that is not json",),
        "wrong_shape": ("no chunk had choices", "openai-compatible endpoint"),
    }.get(fault, said)


# Cells where Plugboard does not (yet) do what the matrix asks: they run, and must still fail
# (strict xfail), until the reason is fixed.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def cells() -> list[Any]:
    out = []
    for fault in FAULTS:
        for kind in REMOTE_KINDS:
            if (kind, fault) in NOT_APPLICABLE:
                continue
            gap = KNOWN_GAPS.get((kind, fault))
            marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
            out.append(pytest.param(kind, fault, id=f"{kind}-{fault}", marks=marks))
    return out


# --- the connection kinds -----------------------------------------------------------------------


@dataclass
class Rig:
    """One column: how to make its card, reach its test server and break it."""

    kind: str  # the column id
    server: base.TestHTTPServer
    spawn: Callable[[int], base.TestHTTPServer]  # a fresh server of this kind on a given port
    path: str  # appended to the server's root for the card's URL
    reply: str  # the full reply to PROMPT
    retries: bool  # does this column retry at all
    breakers: dict[str, Callable[[Any], None]]  # fault -> set it up on the server
    ready: Callable[[Any], None] = lambda server: None  # what a fresh server needs first
    counted: str = ""  # count only POSTs to this path (else every request)

    def url(self, root: str) -> str:
        return root + self.path

    def reset(self, server: base.TestHTTPServer | None = None) -> base.TestHTTPServer:
        """The server back to its first state: no faults, no recorded requests."""
        server = server or self.server
        server.reset()
        self.ready(server)
        return server

    def start(self, port: int) -> base.TestHTTPServer:
        server = self.spawn(port)
        self.ready(server)
        return server

    def count(self, server: base.TestHTTPServer) -> int:
        """Requests the server received for turns (inference requests)."""
        if not self.counted:
            return len(server.requests)
        return sum(
            1 for r in list(server.requests) if r.method == "POST" and r.path == self.counted
        )

    def provider(self, name: str) -> ProviderDraft:
        common: dict[str, Any] = {
            "name": name,
            "base_url": self.url(self.server.root),
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
        }
        if self.kind == "openai_compat":
            return ProviderDraft(kind="openai_compat", auth_type="none", **common)
        if self.kind in ("tgi", "xinference"):
            return ProviderDraft(
                kind=self.kind, auth_type="none", settings={"chat_template": "plain"}, **common
            )
        preset = "openai_chat" if self.kind == "custom_openai" else "passthrough"
        p = PRESETS[preset]
        settings = {
            "preset": preset,
            "request_expression": p.request_expression,
            "response_expression": p.response_expression,
            "response_type": p.response_type,
            "enable_retry": self.retries,
        }
        if self.kind == "custom_openai":
            return ProviderDraft(
                kind="custom_api", auth_type="bearer", api_key=TOKEN, settings=settings, **common
            )
        return ProviderDraft(kind="custom_api", auth_type="none", settings=settings, **common)

    def model(self, name: str) -> ModelDraft:
        remote = {
            "openai_compat": "test-model",
            "custom_openai": "mistralai/Mistral-7B-Instruct-v0.3",
            "xinference": XINFERENCE_UID,
        }.get(self.kind, "")
        return ModelDraft(display_name=name, remote_model=remote)


def _openai() -> dict[str, Callable[[Any], None]]:
    return {
        "read_timeout": lambda s: s.fault("slow_headers", seconds=SLOW),
        "stall": lambda s: s.fault("stall", after=2, seconds=SLOW),
        "cut": lambda s: s.fault("cut", after=2),
        "truncated": lambda s: s.fault("truncated", after=2),
        "http_401": lambda s: s.fault(
            "status",
            status=401,
            message="Incorrect API key provided: sk-ab***wxyz.",
            type="invalid_request_error",
            code="invalid_api_key",
        ),
        "http_403": lambda s: s.fault(
            "status",
            status=403,
            message="You are not allowed to sample from this model",
            type="invalid_request_error",
            code="model_not_allowed",
        ),
        "http_4xx": lambda s: s.fault(
            "status",
            status=400,
            message="This model's maximum context length is 4096 tokens. However, your "
            "messages resulted in 5012 tokens. Please reduce the length of the messages.",
            type="invalid_request_error",
            code="context_length_exceeded",
        ),
        "http_429": lambda s: s.fault(
            "status",
            times=-1,
            status=429,
            message="Rate limit reached for requests per minute.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": "1"},
        ),
        "http_500": lambda s: s.fault(
            "status",
            times=-1,
            status=500,
            message="The server had an error while processing your request.",
        ),
        "http_503": lambda s: s.fault(
            "status",
            times=-1,
            status=503,
            message="The engine is currently overloaded, please try again later.",
            headers={"Retry-After": "0"},
        ),
        "html": lambda s: s.fault("html", times=-1),
        "not_json": lambda s: s.fault("not_json"),
        "wrong_shape": lambda s: s.fault("wrong_shape"),
        "error_event": lambda s: s.fault(
            "error_event", after=2, message="The model crashed while generating."
        ),
        "empty": lambda s: s.fault("empty"),
        "large": lambda s: s.fault("large", size=BIG, word="lorem " * 10_000),
    }


def _tgi_big(s: TGITestServer) -> None:
    s.reply = " ".join(["x" * 65_535] * (BIG // 65_536 + 1))


def _tgi() -> dict[str, Callable[[Any], None]]:
    return {
        "read_timeout": lambda s: s.fault("slow_headers", seconds=SLOW),
        "stall": lambda s: s.fault("stall", after=2, seconds=SLOW),
        "cut": lambda s: s.fault("cut", after=2),
        "truncated": lambda s: s.fault("truncated", after=2),
        "http_401": lambda s: setattr(s, "api_key", "hf_AbCdEf0123456789"),  # TGI: empty body
        "http_403": lambda s: s.fault(
            "status",
            status=403,
            error="This token cannot use this endpoint",
            error_type="authorization",
        ),
        "http_4xx": lambda s: s.fault(
            "status",
            status=422,
            error="Input validation error: `inputs` must have less than 1024 tokens. Given: 2048",
            error_type="validation",
        ),
        "http_429": lambda s: s.fault(
            "status",
            times=-1,
            status=429,
            error="Model is overloaded",
            error_type="overloaded",
            headers={"Retry-After": "1"},
        ),
        "http_500": lambda s: s.fault(
            "status",
            times=-1,
            status=500,
            error="Request failed during generation: Server error: boom",
            error_type="generation",
        ),
        "http_503": lambda s: s.fault(
            "status",
            times=-1,
            status=503,
            error="Model is loading",
            error_type="unhealthy",
            headers={"Retry-After": "0"},
        ),
        "html": lambda s: s.fault("html", times=-1),
        "not_json": lambda s: s.fault("not_json"),
        "wrong_shape": lambda s: s.fault("wrong_shape"),
        "error_event": lambda s: s.fault("error_event", after=2),
        "empty": lambda s: setattr(s, "reply", ""),
        "large": _tgi_big,
    }


def _custom(kind: str) -> dict[str, Callable[[Any], None]]:
    breakers: dict[str, Callable[[Any], None]] = {
        "read_timeout": lambda s: s.fault("slow", seconds=SLOW),
        "stall": lambda s: s.fault("stall", seconds=SLOW),
        "cut": lambda s: s.fault("cut_body"),
        "http_403": lambda s: s.fault(
            "status",
            status=403,
            body={"error": {"message": "Your plan does not include this model."}},
        ),
        "http_429": lambda s: s.fault("rate_limit", times=-1, retry_after=1),
        "http_500": lambda s: s.fault("server_error", times=-1),
        "http_503": lambda s: s.fault(
            "status",
            times=-1,
            status=503,
            body={"error": "Service unavailable: the model is loading."},
            headers={"Retry-After": "0"},
        ),
        "html": lambda s: s.fault("html", times=-1),
        "not_json": lambda s: s.fault("not_json"),
        "wrong_shape": lambda s: s.fault("wrong_shape"),
        "error_body": lambda s: s.fault("error_body"),
        "empty": lambda s: s.fault("empty"),
        "large": lambda s: s.fault("large", size=BIG),
    }
    breakers["error_event"] = breakers.pop("error_body")
    if kind == "custom_openai":
        breakers["http_401"] = lambda s: setattr(s, "token", "tok-rotated-9876543210")
        breakers["http_4xx"] = lambda s: s.fault(
            "status",
            status=400,
            body={
                "error": {
                    "message": "max_tokens must be at most 4096 for this model.",
                    "type": "invalid_request_error",
                }
            },
        )
    else:
        breakers["http_401"] = lambda s: s.fault(
            "status", status=401, body={"detail": "Not authenticated"}
        )
        breakers["http_4xx"] = lambda s: s.fault(
            "status",
            status=422,
            body={
                "detail": [
                    {
                        "loc": ["body", "seq_len"],
                        "msg": "ensure this value is less than or equal to 4096",
                        "type": "value_error.number.not_le",
                    }
                ]
            },
        )
    return breakers


if XinferenceTestServer is not None:

    class FaultyXinference(XinferenceTestServer):  # type: ignore[misc,valid-type]
        """The Xinference test server with the faults the matrix needs that it lacks, on
        POST /v1/chat/completions: slow_headers(seconds) (silence, then the connection
        closes), stall(after, seconds), html, not_json, wrong_shape. (Its own: status,
        error_event, cut, truncated.) A subclass here, not an edit of its module: that
        server is being written alongside this matrix."""

        EXTRA = ("slow_headers", "stall", "html", "not_json", "wrong_shape")

        def route(self, h: Any, request: Any) -> None:
            chat = request.method == "POST" and request.path == "/v1/chat/completions"
            fault = self.faults[0] if chat and self.faults else None
            if fault is None or fault.name not in self.EXTRA:
                super().route(h, request)
                return
            self.take_fault()
            o = fault.options
            if fault.name == "html":
                h.send_bytes(502, NGINX_502, "text/html")
            elif fault.name in ("not_json", "wrong_shape"):
                h.start_chunked()
                if fault.name == "not_json":
                    h.write_chunk(b"data: not json\r\n\r\n")
                else:
                    h.write_chunk(b'data: {"result": "no choices here"}\r\n\r\n')
                    h.write_chunk(b"data: [DONE]\r\n\r\n")
                h.end_chunked()
            elif fault.name == "slow_headers":
                # Silence, then the connection closes: the client has given up by then, and
                # routing the request late could take a fault queued for a later request.
                time.sleep(o.get("seconds", 2))
                h.close_connection = True
            else:  # stall: the role chunk and `after` tokens, then silence, then the rest
                write, calls = h.write_chunk, [0]

                def stalling(data: bytes) -> None:
                    calls[0] += 1
                    if calls[0] == o.get("after", 2) + 2:
                        time.sleep(o.get("seconds", 2))
                    write(data)

                h.write_chunk = stalling
                super().route(h, request)


def _xinference_breakers() -> dict[str, Callable[[Any], None]]:
    return {
        "read_timeout": lambda s: s.fault("slow_headers", seconds=SLOW),
        "stall": lambda s: s.fault("stall", after=2, seconds=SLOW),
        "cut": lambda s: s.fault("cut", after=2),
        "truncated": lambda s: s.fault("truncated", after=2),
        "http_401": lambda s: setattr(s, "api_key", XINFERENCE_KEY),
        "http_403": lambda s: s.fault(
            "status", status=403, detail="Forbidden: this key may not use this model"
        ),
        "http_4xx": lambda s: s.fault(
            "status",
            status=422,
            detail=[
                {
                    "loc": ["body", "max_tokens"],
                    "msg": "ensure this value is less than or equal to 32768",
                    "type": "value_error.number.not_le",
                }
            ],
        ),
        "http_429": lambda s: s.fault(
            "status",
            times=-1,
            status=429,
            detail="Rate limit exceeded",
            headers={"Retry-After": "1"},
        ),
        "http_500": lambda s: s.fault(
            "status", times=-1, status=500, detail="Internal Server Error: boom"
        ),
        "http_503": lambda s: s.fault(
            "status",
            times=-1,
            status=503,
            detail="Service Unavailable",
            headers={"Retry-After": "0"},
        ),
        "html": lambda s: s.fault("html", times=-1),
        "not_json": lambda s: s.fault("not_json"),
        "wrong_shape": lambda s: s.fault("wrong_shape"),
        "error_event": lambda s: s.fault(
            "error_event", after=2, message="The model crashed while generating."
        ),
        "empty": lambda s: setattr(s, "reply", ""),
        "large": lambda s: setattr(s, "reply", " ".join(["x" * 65_535] * (BIG // 65_536 + 1))),
    }


# 404: a wrong model name where the API has one in the URL-independent body, else a wrong path.
WRONG_404 = {
    "xinference": ("model", f"{XINFERENCE_UID}-nope"),
    "openai_compat": ("model", "gpt-nope"),
    "tgi": ("path", "/api/generate"),
    "custom_openai": ("path", "/v1/chat/completion"),
    "custom_passthrough": ("path", "/echo-batc"),
}


@contextmanager
def running_rigs() -> Iterator[dict[str, Rig]]:
    """The remote columns, their test servers running (shared: reset them per test)."""
    openai = OpenAITestServer().start()
    tgi = TGITestServer().start()
    custom = CustomAPITestServer(token=TOKEN).start()
    echo = f"Echo: {PROMPT}"
    rigs = {
        "openai_compat": Rig(
            "openai_compat",
            openai,
            lambda port: OpenAITestServer(port=port).start(),
            "/v1",
            echo,
            True,
            _openai(),
        ),
        "tgi": Rig(
            "tgi",
            tgi,
            lambda port: TGITestServer(port=port).start(),
            "",
            DEFAULT_REPLY,
            True,
            _tgi(),
        ),
        "custom_openai": Rig(
            "custom_openai",
            custom,
            lambda port: CustomAPITestServer(token=TOKEN, port=port).start(),
            "/v1/chat/completions",
            echo,
            True,
            _custom("custom_openai"),
        ),
        "custom_passthrough": Rig(
            "custom_passthrough",
            custom,
            lambda port: CustomAPITestServer(token=TOKEN, port=port).start(),
            "/echo-batch",
            f"Reply to: {PROMPT}",
            False,
            _custom("custom_passthrough"),
        ),
    }
    servers: list[base.TestHTTPServer] = [openai, tgi, custom]
    if XinferenceTestServer is not None:
        xinf = FaultyXinference().start()
        servers.append(xinf)
        rigs["xinference"] = Rig(
            "xinference",
            xinf,
            lambda port: FaultyXinference(port=port).start(),
            "",
            echo,
            True,
            _xinference_breakers(),
            ready=lambda server: server.launch_ready(XINFERENCE_UID),
            counted="/v1/chat/completions",
        )
        rigs["xinference"].reset()
    try:
        yield rigs
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def rigs() -> Iterator[dict[str, Rig]]:
    with running_rigs() as running:
        yield running


# --- helpers ------------------------------------------------------------------------------------


class Waits:
    """Stands in for `time` in the HTTP seam: records each wait between retries, sleeps briefly."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    @staticmethod
    def time() -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(min(seconds, SHORT_WAIT))


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Waits:
    recorder = Waits()
    monkeypatch.setattr(http, "time", recorder)
    return recorder


@pytest.fixture(autouse=True)
def _forget_server_quirks() -> Iterator[None]:
    openai_compat._quirks.clear()
    yield
    openai_compat._quirks.clear()


class Blackhole:
    """A listening socket that never accepts and whose backlog is already full: a connection
    attempt gets no answer at all, so the client's connect timeout fires (works offline)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = int(self.listener.getsockname()[1])
        self.fillers: list[socket.socket] = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self.fillers.append(filler)
        probe = socket.socket()
        probe.settimeout(0.1)
        try:
            probe.connect(("127.0.0.1", self.port))
        except TimeoutError:
            pass
        else:  # pragma: no cover — the trick does not work on this machine
            raise RuntimeError("the full-backlog listener accepted a connection")
        finally:
            probe.close()

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.listener.close()


def turn(ws: Workspace, card_id: int, prompt: str, conversation_id: int | None = None):
    return collect(
        stream_turn(
            ws, TurnRequest(model_id=card_id, prompt=prompt, conversation_id=conversation_id)
        )
    )


def shown(
    record: Callable[[str, Any], None],
    result: TurnResult,
    requests: int | None = None,
    delays: list[float] | None = None,
) -> None:
    """What the cell produced, for docs/reliability.md (tests/integration/reliability_report)."""
    record("kind", result.error.kind if result.error else result.status)
    record("message", result.error.message if result.error else "")
    record("partial", len(result.text))
    if requests is not None:
        record("requests", requests)
    if delays is not None:
        record("waits", list(delays))


def assert_clear(message: str, words: tuple[str, ...], secrets: tuple[str, ...] = ()) -> None:
    """One message a person can act on."""
    assert message.strip(), "an empty error message"
    assert len(message) < 600, message
    lowered = message.lower()
    for bad in FORBIDDEN:
        assert bad.lower() not in lowered, f"{bad!r} in {message!r}"
    for word in words:
        assert word.lower() in lowered, f"{word!r} not in {message!r}"
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", message.strip()) if s]
    assert len(sentences) == len(set(sentences)), f"a sentence twice in {message!r}"
    for secret in secrets:
        assert secret not in message


def assert_saved(ws: Workspace, result: TurnResult, expect: Expect, full_reply: str) -> None:
    """The prompt, the (partial) reply and its error are in the database; one UsageEvent."""
    user, reply = message_rows(ws, result.conversation_id)
    assert (user.role, user.content, user.status) == ("user", PROMPT, "ok")
    assert (reply.role, reply.status) == ("assistant", expect.status)
    assert reply.content == result.text
    if expect.partial:
        assert reply.content, "the text that streamed before the fault was lost"
        assert full_reply.startswith(reply.content) and reply.content != full_reply
    elif expect.status == "error":
        assert reply.content == ""
    [event] = usage_events(ws)
    assert (event.status, event.error_kind) == (
        expect.status,
        None if expect.status == "ok" else expect.kind,
    )
    if expect.status == "error":
        err = result.error
        assert err is not None
        assert reply.error_kind == err.kind
        assert reply.error_message == err.message
        assert reply.error_detail == err.detail
        assert reply.error_detail, "no Details for an engineer"
    else:
        assert reply.error_kind is None and reply.error_message is None


def assert_waits(delays: list[float], expect: Expect, retries: int) -> None:
    assert len(delays) == retries, delays
    for attempt, delay in enumerate(delays):
        if expect.wait is not None:
            assert delay == expect.wait  # Retry-After, as the server asked
        else:
            backoff = BASE_DELAY * 2**attempt
            assert backoff <= delay <= backoff * 1.25 + 1e-9


def edit_card(ws: Workspace, card_id: int, *, url: str | None = None, model: str | None = None):
    """What a person does in Edit: change the connection's URL or the remote model name."""
    card = catalog.get_card(ws, card_id)
    provider = catalog.provider_draft(card.provider)
    if url is not None:
        provider.base_url = url
    draft = catalog.model_draft(card)
    if model is not None:
        draft.remote_model = model
    catalog.update_model(ws, card_id, draft, provider)


class Broken:
    """One fault set up for a card: `heal()` takes it away (and returns the server the card
    reaches then), `close()` undoes whatever the fault needed."""

    def __init__(self, ws: Workspace, card: CardView, rig: Rig, fault: str) -> None:
        self.ws, self.card, self.rig, self.fault = ws, card, rig, fault
        self.server = rig.server
        self.extra: list[base.TestHTTPServer] = []  # servers started to make a fault go away
        self.hole: Blackhole | None = None
        self.port = 0
        if fault == "refused":
            self.port = free_port()
            self.edit(url=rig.url(f"http://127.0.0.1:{self.port}"))
        elif fault == "dns":
            self.edit(url=rig.url(f"http://{DEAD_HOST}:{self.server.port}"))
        elif fault == "connect_timeout":
            self.hole = Blackhole()
            self.port = self.hole.port
            self.edit(url=rig.url(f"http://127.0.0.1:{self.port}"))
        elif fault == "http_404":
            what, wrong = WRONG_404[rig.kind]
            if what == "model":
                self.edit(model=wrong)
            else:
                self.edit(url=self.server.root + wrong)
        else:
            rig.breakers[fault](self.server)

    def edit(self, *, url: str | None = None, model: str | None = None) -> None:
        edit_card(self.ws, self.card.id, url=url, model=model)

    def heal(self) -> base.TestHTTPServer:
        if self.fault in ("refused", "connect_timeout"):  # the port is served properly (again)
            if self.hole is not None:
                self.hole.close()
            self.extra.append(self.rig.start(self.port))
            return self.extra[-1]
        if self.fault in ("dns", "http_404"):  # the person corrects the URL or model name
            self.edit(url=self.rig.url(self.server.root), model=self.rig.model("").remote_model)
        return self.rig.reset()  # the server is well again

    def close(self) -> None:
        if self.hole is not None:
            self.hole.close()
        for spawned in self.extra:
            spawned.stop()
        self.rig.reset()


# --- the matrix ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "fault"), cells())
def test_fault(
    kind: str,
    fault: str,
    rigs: dict[str, Rig],
    make_workspace: Callable[..., Workspace],
    waits: Waits,
    record_property: Callable[[str, Any], None],
) -> None:
    rig = rigs[kind]
    server = rig.reset()
    ws = make_workspace(
        PLUGBOARD_MAX_RETRIES=str(MAX_RETRIES), PLUGBOARD_MAX_RETRY_WAIT="2", seed=False
    )
    card = catalog.add_custom_model(ws, rig.provider(f"{kind} server"), rig.model(kind))
    expect = expected(kind, fault)
    broken = Broken(ws, card, rig, fault)
    try:
        started = time.monotonic()
        result = turn(ws, card.id, PROMPT)
        elapsed = time.monotonic() - started

        # One clear message, everything saved, one UsageEvent.
        shown(record_property, result, rig.count(server), waits.delays)
        assert result.status == expect.status, (result.status, result.error)
        if expect.status == "error":
            assert result.error is not None
            assert result.error.kind == expect.kind, (result.error.kind, result.error.message)
            assert_clear(result.error.message, expect.words, (TOKEN,))
            assert TOKEN not in result.error.detail
        elif fault == "empty":
            assert result.text == ""
        elif fault == "large":
            assert len(result.text) >= BIG * 0.99
            assert set(result.text) <= set("lorem x")  # the servers' filler text
        assert_saved(ws, result, expect, rig.reply)

        # Retries only where allowed.
        retries = MAX_RETRIES if expect.retried and rig.retries else 0
        assert_waits(waits.delays, expect, retries)
        received = 0 if fault in NO_SERVER else 1 + retries
        if expect.sent is not None:
            received = expect.sent
        assert rig.count(server) == received, [r.path for r in server.requests]
        if fault in ("read_timeout", "stall"):
            assert elapsed < SLOW, "the read timeout did not fire"

        # The fault goes away: the next turn, same conversation, same workspace, succeeds.
        target = rig.reset(broken.heal())
        waits.delays.clear()
        again = turn(ws, card.id, PROMPT, conversation_id=result.conversation_id)
        assert again.status == "ok", again.error and again.error.message
        assert again.text == rig.reply
        assert waits.delays == []
        assert rig.count(target) == 1
        assert [e.status for e in usage_events(ws)] == [expect.status, "ok"]
        rows = message_rows(ws, result.conversation_id)
        assert [(m.role, m.status) for m in rows[2:]] == [("user", "ok"), ("assistant", "ok")]
    finally:
        broken.close()


# --- local_gguf: the faults of a local file ---------------------------------------------------


def local_cells() -> list[Any]:
    return [pytest.param("local_gguf", fault, id=f"local_gguf-{fault}") for fault in LOCAL_FAULTS]


LOCAL_EXPECT: dict[str, Expect] = {
    "missing_file": Expect("config", ("does not exist", "check the path in edit")),
    "corrupt_file": Expect("config", ("could not load", "is it a valid gguf model file")),
    "context_overflow": Expect(
        "bad_request", ("does not fit the local model's context of 256 tokens", "start a new chat")
    ),
}


@pytest.fixture(scope="module")
def good_model(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A model file of our own (a link to the bundled GGUF), loaded at most once here."""
    path = tmp_path_factory.mktemp("models") / "good.gguf"
    path.symlink_to(bundled_model)
    yield path
    local_gguf._loaded.pop(path, None)


@pytest.mark.parametrize(("kind", "fault"), local_cells())
def test_local_fault(
    kind: str,
    fault: str,
    bundled_model: Path,
    good_model: Path,
    tmp_path: Path,
    make_workspace: Callable[..., Workspace],
    record_property: Callable[[str, Any], None],
) -> None:
    ws = make_workspace(seed=False)
    # missing_file: the good file itself goes away and comes back; corrupt_file: a file of
    # its own, replaced in Edit by the good one; context_overflow: a model with 256 tokens.
    path = good_model if fault == "missing_file" else tmp_path / f"{fault}.gguf"
    if path != good_model:
        path.symlink_to(bundled_model)
    card = catalog.add_custom_model(
        ws,
        ProviderDraft(name="Local file", kind="local_gguf", base_url=str(path), auth_type="none"),
        ModelDraft(
            display_name="Local model",
            context_length=256 if fault == "context_overflow" else 2048,
            default_params={"max_tokens": 4, "temperature": 0},
        ),
    )
    prompt = PROMPT
    if fault == "missing_file":
        path.unlink()
    elif fault == "corrupt_file":
        path.unlink()
        with good_model.open("rb") as model:
            path.write_bytes(model.read(2_000_000))  # the head of a real GGUF, nothing more
    else:
        prompt = " ".join(["word"] * 600)
    expect = LOCAL_EXPECT[fault]
    try:
        result = turn(ws, card.id, prompt)
        shown(record_property, result)
        assert result.status == "error" and result.error is not None
        assert result.error.kind == expect.kind, result.error.message
        assert_clear(result.error.message, expect.words)
        user, reply = message_rows(ws, result.conversation_id)
        assert (user.role, user.content) == ("user", prompt)
        assert (reply.status, reply.content, reply.error_kind) == ("error", "", expect.kind)
        assert reply.error_message == result.error.message
        assert [(e.status, e.error_kind) for e in usage_events(ws)] == [("error", expect.kind)]

        # The fault goes away: the file is back, the good file is chosen in Edit, or the
        # prompt is short again.
        if fault == "missing_file":
            path.symlink_to(bundled_model)
        elif fault == "corrupt_file":
            edit_card(ws, card.id, url=str(good_model))
        again = turn(ws, card.id, PROMPT, conversation_id=result.conversation_id)
        assert again.status == "ok", again.error and again.error.message
        assert again.reply is not None and again.reply.completion_tokens
        assert [e.status for e in usage_events(ws)] == ["error", "ok"]
    finally:
        if fault == "missing_file" and not path.exists():
            path.symlink_to(bundled_model)
        if path != good_model:
            local_gguf._loaded.pop(path, None)  # a model loaded for this test only


# --- a Retry-After is really waited for --------------------------------------------------------


def test_retry_after_is_really_waited_for(
    rigs: dict[str, Rig], make_workspace: Callable[..., Workspace]
) -> None:
    rig = rigs["openai_compat"]
    rig.reset()
    ws = make_workspace(PLUGBOARD_MAX_RETRIES="2", PLUGBOARD_MAX_RETRY_WAIT="2", seed=False)
    card = catalog.add_custom_model(ws, rig.provider("Echo server"), rig.model("Echo"))
    rig.server.fault("status", status=429, headers={"Retry-After": "1"})
    started = time.monotonic()
    result = turn(ws, card.id, PROMPT)
    assert result.status == "ok" and result.text == rig.reply
    assert time.monotonic() - started >= 1.0
    assert rig.count(rig.server) == 2
    rig.reset()
