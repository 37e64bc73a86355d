"""OpenAI-compatible Chat Completions: OpenAI, vLLM, llama.cpp, TGI's Messages API, Ollama…

Wire format: protocols.md §1. Base URL: with or without `/v1`; a bare host gets `/v1`
(as the Datasaur guide says to add it), and a pasted `…/chat/completions` is trimmed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from core.inference import checks
from core.inference.http import (
    NO_RETRY,
    HttpEndpoint,
    RetryPolicy,
    ServerSentEvent,
    close_stream,
    is_event_stream,
    iter_sse,
    loads,
    parse_json,
    stream_error,
    transport_error,
)
from core.inference.registry import KindSpec
from core.inference.target import Target
from core.inference.types import (
    BadRequest,
    BadResponse,
    ConnectionReport,
    Finish,
    GenerationParams,
    Message,
    Reply,
    StreamEvent,
    StreamInterrupted,
    TextDelta,
    Usage,
    finish_reason,
    token_count,
)
from core.params import COMMON_PARAMS, FREQUENCY_PENALTY, PRESENCE_PENALTY
from core.secrets import scrub

SPEC = KindSpec(
    kind="openai_compat",
    label="OpenAI-compatible",
    description="Any server with the OpenAI Chat Completions API: OpenAI, vLLM, llama.cpp, "
    "Ollama, Together AI, TGI's /v1 Messages API…",
    adapter="core.inference.openai_compat:OpenAICompatAdapter",
    params=(*COMMON_PARAMS, PRESENCE_PENALTY, FREQUENCY_PENALTY),
    url_placeholder="http://localhost:8080/v1",
    url_help="The base address, usually ending in /v1. Requests go to {URL}/chat/completions. "
    "A bare host such as http://localhost:8080 gets /v1 added.",
    model_placeholder="gpt-4o-mini, tgi, meta-llama/Llama-3.1-8B-Instruct…",
    model_help='The model name the server expects. TGI accepts "tgi".',
    lists_models=True,
)

_SUFFIXES = ("/chat/completions", "/completions", "/models")

# Base URLs whose server rejected `stream_options` / `max_tokens`: don't ask twice.
_quirks: dict[str, set[str]] = {}
_quirks_lock = threading.Lock()


def normalise_base_url(url: str) -> str:
    """Idempotent; only the path is looked at (a host named "models" stays), query kept."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    while path.endswith(_SUFFIXES):  # "…/v1/chat/completions", "…/v1//models/"
        path = path[: -len(next(s for s in _SUFFIXES if path.endswith(s)))].rstrip("/")
    return urlunsplit(parts._replace(path=path or "/v1"))


def _has_quirk(base: str, quirk: str) -> bool:
    with _quirks_lock:
        return quirk in _quirks.get(base, set())


def _add_quirk(base: str, quirk: str) -> None:
    with _quirks_lock:
        _quirks.setdefault(base, set()).add(quirk)


def _compat_fix(body: dict[str, Any], err: BadRequest, base: str) -> dict[str, Any] | None:
    """A corrected body when the server rejected a newer OpenAI field, else None."""
    said = err.message.lower()
    if "stream_options" in body and "stream_options" in said:
        _add_quirk(base, "no_stream_options")
        return {k: v for k, v in body.items() if k != "stream_options"}
    if "max_tokens" in body and "max_completion_tokens" in said:
        _add_quirk(base, "max_completion_tokens")
        fixed = {k: v for k, v in body.items() if k != "max_tokens"}
        fixed["max_completion_tokens"] = body["max_tokens"]
        return fixed
    return None


def usage_of(data: Any) -> Usage | None:
    """An OpenAI-style `usage` object (-1 or junk for a count not made: None)."""
    if not isinstance(data, dict):
        return None
    return Usage(token_count(data.get("prompt_tokens")), token_count(data.get("completion_tokens")))


class OpenAICompatAdapter:
    def __init__(self, target: Target, client: httpx.Client | None = None) -> None:
        self.target = target
        self.http = HttpEndpoint.for_target(target, client, normalise_base_url(target.base_url))

    # --- requests -----------------------------------------------------------------------------

    def body(
        self, messages: list[Message], params: GenerationParams, stream: bool
    ) -> dict[str, Any]:
        base = self.http.base_url
        body: dict[str, Any] = {
            "model": self.target.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": stream,
        }
        if stream and not _has_quirk(base, "no_stream_options"):
            body["stream_options"] = {"include_usage": True}
        if params.max_tokens is not None:
            key = (
                "max_completion_tokens"
                if _has_quirk(base, "max_completion_tokens")
                else "max_tokens"
            )
            body[key] = params.max_tokens
        for key in ("temperature", "top_p", "seed"):
            value = getattr(params, key)
            if value is not None:
                body[key] = value
        if params.stop:
            body["stop"] = list(params.stop)
        body.update(params.extra)
        return body

    def _send(self, body: dict[str, Any]) -> httpx.Response:
        for _ in range(3):  # at most two compatibility fixes
            try:
                return self.http.send("POST", "chat/completions", body)
            except BadRequest as err:
                fixed = _compat_fix(body, err, self.http.base_url)
                if fixed is None:
                    raise
                body = fixed
        return self.http.send("POST", "chat/completions", body)

    def stream_chat(
        self, messages: list[Message], params: GenerationParams
    ) -> Generator[StreamEvent, None, None]:
        response = self._send(self.body(messages, params, stream=True))
        finished = False
        events = None
        try:
            if is_event_stream(response):
                # Held here, not only by the loop that reads it: a reader generator dropped at
                # [DONE] would close the connection before close_stream() could keep it.
                events = iter_sse(response)
                yield from self._read_stream(response, events)
                finished = True
            else:  # a server that ignores "stream": true answers with one JSON body
                yield from self._reply_events(self._parse_reply(self._read_json(response)))
        except httpx.TransportError as exc:
            raise transport_error(exc, str(response.request.url), self.http.timeouts) from None
        finally:
            close_stream(response, finished=finished)  # a finished reply keeps its connection

    def _read_json(self, response: httpx.Response) -> Any:
        return parse_json(response.read(), str(response.request.url), self.http.secrets)

    def _read_stream(
        self, response: httpx.Response, events: Iterator[ServerSentEvent]
    ) -> Generator[StreamEvent, None, None]:
        url = str(response.request.url)
        secrets = self.http.secrets
        finished = done = shaped = False
        for event in events:
            data = event.data
            if not data:
                continue
            if data.startswith("[DONE]"):
                done = True
                break
            try:
                chunk = loads(data)
            except (ValueError, RecursionError):  # RecursionError: nested too deep to read
                raise BadResponse(
                    "The stream carried something that is not JSON.",
                    detail=scrub(f"from {url}:\n{data[:500]}", secrets),
                ) from None
            if not isinstance(chunk, dict):
                raise BadResponse(
                    "The stream carried JSON of an unexpected shape.",
                    detail=scrub(f"from {url}:\n{data[:500]}", secrets),
                )
            if chunk.get("error") or event.event == "error":
                raise stream_error(chunk, url=url, secrets=secrets)
            choices = chunk.get("choices")
            if isinstance(choices, list):  # anything else carries no choice we can read
                shaped = True
                for choice in choices:
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta")
                    if isinstance(delta, dict) and (text := delta.get("content")):
                        if not isinstance(text, str):
                            raise BadResponse(
                                "A stream chunk's message content is not text.",
                                detail=scrub(f"from {url}:\n{data[:500]}", secrets),
                            )
                        yield TextDelta(text)
                    if reason := finish_reason(choice.get("finish_reason")):
                        finished = True
                        yield Finish(reason)
            if usage := usage_of(chunk.get("usage")):
                yield usage
        if not shaped:
            raise BadResponse(
                "The stream did not have the shape of a chat completion stream "
                "(no chunk had choices). Is this an OpenAI-compatible endpoint?",
                detail=f"stream from {url} had no chunk with a choices list",
            )
        if not (done or finished):
            raise StreamInterrupted(
                "The reply stopped before the server said it was finished "
                "(the stream ended without its last message). What arrived is kept.",
                detail=f"stream from {url} ended without finish_reason or [DONE]",
            )

    def chat(self, messages: list[Message], params: GenerationParams) -> Reply:
        response = self._send(self.body(messages, params, stream=False))
        try:
            data = self._read_json(response)
        except httpx.TransportError as exc:  # dropped or timed out while reading the body
            raise transport_error(exc, str(response.request.url), self.http.timeouts) from None
        finally:
            response.close()
        return self._parse_reply(data)

    def _parse_reply(self, data: Any) -> Reply:
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise BadResponse(
                "The reply did not have the shape of a chat completion "
                "(no choices[0].message.content). Is this an OpenAI-compatible endpoint?",
                detail=scrub(json.dumps(data)[:2000], self.http.secrets),
            ) from None
        if not isinstance(text, str):
            raise BadResponse(
                "The reply's message content is not text.",
                detail=scrub(str(text)[:500], self.http.secrets),
            )
        return Reply(text, finish_reason(choice.get("finish_reason")), usage_of(data.get("usage")))

    @staticmethod
    def _reply_events(reply: Reply) -> Generator[StreamEvent, None, None]:
        if reply.text:
            yield TextDelta(reply.text)
        if reply.usage:
            yield reply.usage
        yield Finish(reply.finish_reason or "stop")

    # --- discovery ----------------------------------------------------------------------------

    def list_remote_models(self, retry: RetryPolicy | None = None) -> list[str]:
        data = self.http.get_json("models", retry=retry)
        items = data.get("data") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise BadResponse(
                "The model list did not have the expected shape ({'data': [...]}).",
                detail=scrub(json.dumps(data)[:2000], self.http.secrets),
            )
        return [str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")]

    def test_connection(self) -> ConnectionReport:
        report = ConnectionReport()
        if not checks.resolve(self.http.base_url, report):
            return report
        try:
            models = self.list_remote_models(retry=NO_RETRY)
        except Exception as exc:  # noqa: BLE001 — every failure becomes a report line
            failure = checks.classify(exc)
            if failure.layer in ("Connection", "TLS", "Authentication"):
                return report.failed(failure.layer, failure.message)
            report.passed("Connection", "The server answers.")
            report.passed("Model list", "The server has no model list; that is fine.")
        else:
            report.remote_models = models
            report.passed("Connection", "The server answers.")
            listed = f"The server lists {len(models)} model{'s' if len(models) != 1 else ''}"
            if models and self.target.model and self.target.model not in models:
                listed += f", but not '{self.target.model}'"
            report.passed("Model list", listed + ".")
        if not self.target.model:
            listed = (
                f" The server lists: {', '.join(report.remote_models[:10])}."
                if report.remote_models
                else ""
            )
            return report.failed("Model name", "Enter the model name to use." + listed)
        probe = GenerationParams(max_tokens=1, temperature=0)
        try:
            reply = self.chat([Message("user", "Say hi.")], probe)
        except Exception as exc:  # noqa: BLE001
            failure = checks.classify(exc, model=self.target.model, models=report.remote_models)
            return report.failed(failure.layer, failure.message)
        report.passed(
            "Chat request",
            f"'{self.target.model}' answered ({reply.finish_reason or 'done'}): "
            f"{reply.text[:60]!r}.",
        )
        return report
