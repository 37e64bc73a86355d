"""The one httpx seam: shared client, retries before the first byte, SSE, status -> typed error.

Every remote adapter goes through `HttpEndpoint`; nothing else in core/ touches httpx.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from core.egress import EgressPolicy
from core.inference.target import Target
from core.inference.types import (
    AuthFailed,
    BadRequest,
    BadResponse,
    Blocked,
    ConnectionFailed,
    InferenceError,
    NotFound,
    RateLimited,
    RequestTimedOut,
    ServerError,
    StreamInterrupted,
)
from core.secrets import scrub
from core.settings import Timeouts

log = logging.getLogger("plugboard.http")
USER_AGENT = "Plugboard/0.1 (+httpx)"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
DETAIL_LIMIT = 2000

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def make_client() -> httpx.Client:
    """A pooled client, safe to share between threads. Timeouts are set per request."""
    return httpx.Client(
        headers={"User-Agent": USER_AGENT},
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,  # a redirected POST silently becomes a GET; report it instead
    )


def shared_client() -> httpx.Client:
    """The process-wide client (the UI caches its own through st.cache_resource)."""
    global _client
    with _client_lock:
        if _client is None or _client.is_closed:
            _client = make_client()
        return _client


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    max_wait: float = 30.0  # longest Retry-After we honour by waiting
    base_delay: float = 0.5
    max_delay: float = 8.0
    # False: retry only failed connections, and let the caller read 408/429/5xx itself
    # (Xinference's 503 means "still loading", which has its own wait and progress).
    retry_statuses: bool = True

    def backoff(self, attempt: int) -> float:
        delay: float = min(self.max_delay, self.base_delay * 2**attempt)
        return delay * (1 + random.uniform(0, 0.25))


NO_RETRY = RetryPolicy(max_retries=0)


def httpx_timeout(t: Timeouts) -> httpx.Timeout:
    return httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool)


# --- error mapping ----------------------------------------------------------------------------

_DNS_HINTS = (
    "name or service not known",
    "nodename nor servname",
    "getaddrinfo failed",
    "temporary failure in name resolution",
    "no address associated",
    "name resolution",
    "errno -2",
    "errno -3",
    "errno -5",
)


def is_dns_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(hint in text for hint in _DNS_HINTS)


def is_tls_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "ssl" in text or "certificate" in text or "tls" in text


def transport_error(exc: httpx.TransportError, url: str, timeouts: Timeouts) -> InferenceError:
    """Turn an httpx transport failure into a message that names what went wrong."""
    parsed = httpx.URL(url)
    where = f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.ConnectTimeout):
        return RequestTimedOut(
            f"Could not connect to {where} within {timeouts.connect:g} s. "
            "Check that the server is reachable from this machine.",
            detail=detail,
        )
    if isinstance(exc, httpx.ReadTimeout):
        return RequestTimedOut(
            f"The endpoint stopped answering for {timeouts.read:g} s. "
            "The model may be overloaded or still loading; try again, or raise the read timeout.",
            detail=detail,
        )
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimedOut(f"The request to {where} timed out.", detail=detail)
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        if is_dns_failure(exc):
            return ConnectionFailed(
                f"Cannot find the server '{parsed.host}' (DNS lookup failed). "
                "Check the spelling of the endpoint URL.",
                detail=detail,
            )
        if is_tls_failure(exc):
            return ConnectionFailed(
                f"The secure connection to {where} failed (TLS). Check that the URL uses the "
                "right scheme (http or https) and that the server's certificate is valid.",
                detail=detail,
            )
        if "refused" in text or "errno 111" in text:
            return ConnectionFailed(
                f"Nothing is listening at {where} (connection refused). "
                "Is the model server running, and is the port right?",
                detail=detail,
            )
        return ConnectionFailed(f"Cannot connect to {where}: {exc}", detail=detail)
    if isinstance(exc, httpx.RemoteProtocolError):
        return StreamInterrupted(
            "The server closed the connection before the reply was complete.", detail=detail
        )
    return ConnectionFailed(f"The request to {where} failed: {exc}", detail=detail)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError):  # a year past what datetime holds
        return None
    return max(0.0, when - time.time())


def server_message(body: str) -> str:
    """The human part of an error body, for the shapes the servers we know use."""
    text = body.strip()
    if not text:
        return ""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
        if text.lstrip().lower().startswith(("<!doctype", "<html")):
            title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
            return f"an HTML page{': ' + title.group(1).strip()[:300] if title else ''}"
        return text[:300]
    try:
        return _message_from_json(data)[:500]
    except RecursionError:  # parsed just under the limit, too deep to walk from here
        return ""


def _message_from_json(data: Any) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, list):  # FastAPI validation errors, or a bare list
        parts = [_message_from_json(item) for item in data[:3]]
        return "; ".join(p for p in parts if p)
    if isinstance(data, dict):
        for key in ("error", "detail", "message", "msg", "error_message"):
            if data.get(key):
                inner = _message_from_json(data[key])
                if isinstance(data[key], dict | list) and not inner:
                    continue
                loc = data.get("loc")
                if key == "msg" and isinstance(loc, list):
                    return f"{'.'.join(str(p) for p in loc)}: {inner}"
                return inner
    return ""


def _error_code(body: str) -> str:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("code") or err.get("type") or "")
    return ""


_OPENAI_ROUTES = ("/chat/completions", "/completions", "/models", "/embeddings")


def _not_found_advice(url: str) -> str:
    """The /v1 question only helps on OpenAI-style routes (TGI's and custom URLs never take it)."""
    path = httpx.URL(url).path.rstrip("/") if url else ""
    if path.endswith(_OPENAI_ROUTES):
        return "Check the endpoint URL (does it need /v1?) and the model name."
    return "Check the endpoint URL and the model name."


def status_error(
    status: int,
    body: str,
    *,
    url: str,
    method: str = "POST",
    reason: str = "",
    retry_after: float | None = None,
    secrets: tuple[str, ...] = (),
) -> InferenceError:
    """Map an HTTP error status and body to a typed error with a plain-words message."""
    said = scrub(server_message(body), secrets)
    if said and said[-1] not in ".!?":
        said += "."  # "(500): Simulated error. Try again later.", not "error Try again"
    said_part = f": {said}" if said else "."
    detail = scrub(f"HTTP {status} {reason} from {method} {url}\n{body[:DETAIL_LIMIT]}", secrets)
    kw: dict[str, Any] = {"status": status, "detail": detail, "retry_after": retry_after}
    if status == 401:
        return AuthFailed(
            f"The endpoint rejected the API key (401){said_part} Check the key in Edit.", **kw
        )
    if status == 403:
        return AuthFailed(
            f"The endpoint refused access (403){said_part} "
            "The key may not be allowed to use this model.",
            **kw,
        )
    if status == 404:
        return NotFound(
            f"Nothing was found at {url} (404){said_part} {_not_found_advice(url)}", **kw
        )
    if status in (400, 409, 413, 415, 422):
        return BadRequest(f"The endpoint rejected the request ({status}){said_part}", **kw)
    if status == 408:
        return RequestTimedOut(
            f"The endpoint timed out handling the request (408){said_part}", **kw
        )
    if status == 429:
        if _error_code(body) == "insufficient_quota":
            return RateLimited(
                f"The account behind this API key is out of quota (429){said_part} "
                "Check its plan and billing.",
                **kw,
            )
        wait = f" It asked to wait {retry_after:g} s." if retry_after else ""
        return RateLimited(
            f"The endpoint is rate limiting requests (429){said_part}{wait} "
            "Wait a moment and try again.",
            **kw,
        )
    if status == 424:
        return ServerError(f"The model failed while generating (424){said_part} Try again.", **kw)
    if status == 503:
        return ServerError(
            f"The model is unavailable or still loading (503){said_part} Try again shortly.", **kw
        )
    if status >= 500:
        return ServerError(
            f"The endpoint had an internal error ({status}){said_part} Try again later.", **kw
        )
    if 300 <= status < 400:
        return BadRequest(
            f"The endpoint redirected the request ({status}). Use the final address as the "
            "endpoint URL (for example https:// instead of http://).",
            **kw,
        )
    return BadResponse(f"The endpoint answered with an unexpected status {status}{said_part}", **kw)


def _should_retry(err: InferenceError, body: str, headers: httpx.Headers) -> bool:
    if headers.get("x-should-retry") == "false":
        return False
    if err.status not in RETRY_STATUSES:
        return False
    return _error_code(body) != "insufficient_quota"


# --- the endpoint -----------------------------------------------------------------------------


class HttpEndpoint:
    """One base URL with its headers, timeouts and retry policy."""

    def __init__(
        self,
        client: httpx.Client,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        secrets: tuple[str, ...] = (),
        egress: EgressPolicy | None = None,
    ) -> None:
        self.egress = egress
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.secrets = secrets

    @classmethod
    def for_target(
        cls, target: Target, client: httpx.Client | None, base_url: str | None = None
    ) -> HttpEndpoint:
        return cls(
            client or shared_client(),
            target.base_url if base_url is None else base_url,
            headers=target.request_headers(),
            timeouts=target.timeouts,
            retry=RetryPolicy(max_retries=target.max_retries, max_wait=target.max_retry_wait),
            secrets=target.secrets,
            egress=target.egress,
        )

    def url(self, path: str) -> str:
        if not path:
            return self.base_url
        return f"{self.base_url}/{path.lstrip('/')}"

    def _request(
        self, method: str, path: str, body: Any | None, extra_headers: dict[str, str] | None
    ) -> httpx.Request:
        headers = {**self.headers, **(extra_headers or {})}
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        return self.client.build_request(
            method,
            self.url(path),
            content=content,
            headers=headers,
            timeout=httpx_timeout(self.timeouts),
        )

    def send(
        self,
        method: str,
        path: str,
        body: Any | None = None,
        *,
        headers: dict[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send and return a response whose body is not read yet (status < 400).

        Retries connection failures and 408/429/5xx before any byte of a reply is read,
        honouring Retry-After. Raises a typed InferenceError otherwise. The caller must
        close the response (use `stream()` or `request_json()`).
        """
        policy = retry or self.retry
        request = self._request(method, path, body, headers)
        url = str(request.url)
        if self.egress and (refused := self.egress.check_url(url)):
            raise Blocked(refused, detail=f"{method} {url} refused by PLUGBOARD_*_HOSTS rules")
        attempt = 0
        while True:
            try:
                response = self.client.send(request, stream=True)
            except httpx.TransportError as exc:
                err = transport_error(exc, url, self.timeouts)
                retry_ok = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                # A wrong host name or scheme/certificate fails the same way every time.
                permanent = is_dns_failure(exc) or is_tls_failure(exc)
                if retry_ok and not permanent and attempt < policy.max_retries:
                    delay = policy.backoff(attempt)
                    log.info("retrying %s %s after %s in %.1fs", method, url, err.kind, delay)
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise err from None
            if response.status_code < 300:
                return response
            try:
                raw = response.read()
            except httpx.TransportError:
                raw = b""
            finally:
                response.close()
            text = raw.decode("utf-8", errors="replace")
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            err = status_error(
                response.status_code,
                text,
                url=url,
                method=method,
                reason=response.reason_phrase,
                retry_after=retry_after,
                secrets=self.secrets,
            )
            if (
                policy.retry_statuses
                and _should_retry(err, text, response.headers)
                and attempt < policy.max_retries
            ):
                delay = retry_after if retry_after is not None else policy.backoff(attempt)
                if delay <= policy.max_wait:
                    log.info(
                        "retrying %s %s after HTTP %s in %.1fs", method, url, err.status, delay
                    )
                    time.sleep(delay)
                    attempt += 1
                    continue
            raise err

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        body: Any | None = None,
        *,
        headers: dict[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> Iterator[httpx.Response]:
        """A response to read incrementally; always closed, also on Stop or a page rerun."""
        response = self.send(method, path, body, headers=headers, retry=retry)
        try:
            yield response
        except httpx.TransportError as exc:
            raise transport_error(exc, str(response.request.url), self.timeouts) from None
        finally:
            response.close()

    def request_json(
        self,
        method: str,
        path: str,
        body: Any | None = None,
        *,
        headers: dict[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        with self.stream(method, path, body, headers=headers, retry=retry) as response:
            raw = response.read()
        return parse_json(raw, str(response.request.url), self.secrets)

    def get_json(self, path: str, *, retry: RetryPolicy | None = None) -> Any:
        return self.request_json("GET", path, retry=retry)

    def post_json(self, path: str, body: Any, *, retry: RetryPolicy | None = None) -> Any:
        return self.request_json("POST", path, body, retry=retry)


def parse_json(raw: bytes, url: str, secrets: tuple[str, ...] = ()) -> Any:
    if not raw.strip():
        raise BadResponse(
            "The endpoint answered with an empty body.", detail=f"empty body from {url}"
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
        excerpt = scrub(raw[:DETAIL_LIMIT].decode("utf-8", errors="replace"), secrets)
        what = server_message(excerpt) if excerpt.lstrip().startswith("<") else "text"
        raise BadResponse(
            f"The endpoint answered with {what or 'text'} instead of JSON. "
            "Check that the URL points at the model API, not a web page.",
            detail=f"non-JSON body from {url}:\n{excerpt}",
        ) from None


# The decoder's C scanner (typeshed does not declare the attribute).
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def loads(text: str) -> Any:
    """`json.loads` for hot paths such as a stream's chunks, the same results and errors.

    It calls the C scanner directly, skipping `json.loads`'s Python layers; any text that
    does not scan in one go (surrounding whitespace, trailing text, an error) goes to
    `json.loads` itself.
    """
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, ValueError):
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


DRAIN_SECONDS = 0.2  # the longest wait for the end of a finished stream's body
DRAIN_BYTES = 65536  # and the most read from it


def close_stream(response: httpx.Response, *, finished: bool) -> None:
    """Close a streamed response, keeping its connection for the next request if it can.

    An HTTP/1.1 connection goes back to the pool only once its response has been read to the
    end; a stream left at its last event (`[DONE]`) is closed with its connection, and the next
    request pays a new TCP (and TLS) handshake before its first token. So after a `finished`
    reply, what is left of the body (usually only the end of its chunked encoding) is read and
    dropped first, waiting at most DRAIN_SECONDS for it; a server that keeps talking after its
    last event costs its connection, as before.
    """
    stream = response.stream
    if finished and not response.is_closed and isinstance(stream, httpx.SyncByteStream):
        extensions = response.request.extensions
        # The transport reads the read timeout when a body read starts: the drain gets its own.
        extensions["timeout"] = {**extensions.get("timeout", {}), "read": DRAIN_SECONDS}
        left = DRAIN_BYTES
        try:
            for chunk in stream:  # the transport's bytes, nothing decoded
                left -= len(chunk)
                if left < 0:
                    break
        except (httpx.HTTPError, httpx.StreamError):
            pass  # the reply is complete: a failed drain only costs the connection
    response.close()


def is_event_stream(response: httpx.Response) -> bool:
    return "text/event-stream" in response.headers.get("content-type", "")


@dataclass(slots=True)
class ServerSentEvent:
    """One dispatched event: its type ("message" unless an `event:` line named another), its
    data (the `data:` lines joined by newlines), the last event id seen, and `retry:` if given.
    """

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEDecoder:
    """An incremental `text/event-stream` parser (WHATWG HTML, "Parsing an event stream").

    `feed()` takes decoded text in pieces cut anywhere (inside a line or a CRLF pair) and
    returns the events completed by it; `end()` returns what the end of the stream completes.
    Lines end with CRLF, LF or CR; a leading BOM is dropped; `:` lines are comments; a field's
    value loses one leading space (`data:x` and `data: x` are the same); several `data:` lines
    make one event's data joined by newlines; a blank line dispatches the event if it has data
    (an event with no `data:` line is not dispatched, as the spec says); `event:` names the
    dispatched event's type, `id:` (without NUL) sets the id it and later events carry, `retry:`
    with only digits is passed along; other fields are ignored.

    One departure from the spec, on purpose: an event still pending when the stream ends
    cleanly (its last line, or the blank line after it, never sent) is dispatched by `end()`
    rather than discarded, so a server that omits the final blank line loses no reply text.

    This replaces httpx-sse's line-at-a-time decoder on the streaming hot path: lines are split
    a network read at a time, and `data:` lines, by far the most common, take one comparison.
    """

    __slots__ = ("_data", "_event", "_id", "_retry", "_skip_lf", "_started", "_tail")

    def __init__(self) -> None:
        self._tail = ""  # an incomplete last line
        self._skip_lf = False  # the previous piece ended in CR: a LF starting this one goes
        self._started = False  # a BOM is dropped only at the very start
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self._retry: int | None = None

    def feed(self, text: str) -> list[ServerSentEvent]:
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if not text:
            return []
        if "\r" in text:
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        if self._tail:
            lines[0] = self._tail + lines[0]
        self._tail = lines.pop()
        return self._lines(lines) if lines else []

    def end(self) -> list[ServerSentEvent]:
        """The event a stream ending without its final blank line left pending, if any."""
        lines = [self._tail, ""] if self._tail else [""]
        self._tail = ""
        return self._lines(lines)

    def _lines(self, lines: list[str]) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            if not line:  # a blank line: dispatch
                if data:
                    events.append(
                        ServerSentEvent(
                            data[0] if len(data) == 1 else "\n".join(data),
                            self._event or "message",
                            self._id,
                            self._retry,
                        )
                    )
                    data = self._data = []
                    self._retry = None
                self._event = ""
            elif line.startswith("data:"):
                data.append(line[6:] if line.startswith(" ", 5) else line[5:])
            elif line[0] != ":":  # not a comment
                self._field(line)
        return events

    def _field(self, line: str) -> None:
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":  # "data" alone: an empty data line
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)


def iter_sse(response: httpx.Response) -> Iterator[ServerSentEvent]:
    """Server-sent events of a 2xx response, decoded by `SSEDecoder` as the text arrives."""
    decoder = SSEDecoder()
    for text in response.iter_text():
        yield from decoder.feed(text)
    yield from decoder.end()


def stream_error(payload: Any, *, url: str, secrets: tuple[str, ...] = ()) -> InferenceError:
    """An error event inside a 200 stream: `{"error": {...}}` or `{"error": "text"}`."""
    error = payload.get("error") if isinstance(payload, dict) else payload
    status = None
    if isinstance(error, dict):
        raw_status = error.get("http_status_code") or error.get("status")
        status = raw_status if isinstance(raw_status, int) else None
    body = json.dumps(payload if isinstance(payload, dict) else {"error": payload})
    if status and status >= 400:
        err = status_error(status, body, url=url, secrets=secrets)
        err.message = f"The model stopped with an error mid-reply: {err.message}"
        err.args = (err.message,)
        return err
    said = scrub(server_message(body), secrets) or "no message"
    return ServerError(
        f"The model stopped with an error mid-reply: {said}",
        detail=scrub(f"error event in the stream from {url}\n{body[:DETAIL_LIMIT]}", secrets),
    )


def describe_error(err: BaseException) -> InferenceError:
    """Any exception an adapter lets escape, as an InferenceError (unknown ones say so)."""
    if isinstance(err, InferenceError):
        return err
    if isinstance(err, httpx.TransportError):
        try:
            url = str(err.request.url)
        except RuntimeError:  # no request attached
            url = ""
        return transport_error(err, url, Timeouts())
    return InferenceError(
        f"Something unexpected went wrong: {type(err).__name__}: {err}",
        detail=f"{type(err).__name__}: {err}",
    )
