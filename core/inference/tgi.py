"""Hugging Face Text Generation Inference, native API: /generate, /generate_stream, /info.

Wire format and quirks: protocols.md §2. The conversation becomes one prompt through the
card's chat template (core.inference.prompts). Every parameter of the DataCrunch/TGI schema
can be set; TGI's own validation rules are checked before anything is sent.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import httpx

from core.inference import checks, prompts
from core.inference.http import (
    NO_RETRY,
    HttpEndpoint,
    is_event_stream,
    iter_sse,
    parse_json,
    transport_error,
)
from core.inference.registry import KindSpec
from core.inference.target import Target
from core.inference.types import (
    BadRequest,
    BadResponse,
    ConnectionReport,
    Details,
    Finish,
    GenerationParams,
    InferenceError,
    Message,
    RateLimited,
    Reply,
    ServerError,
    StreamEvent,
    StreamInterrupted,
    TextDelta,
    Usage,
    finish_reason,
    token_count,
)
from core.params import ParamSpec
from core.secrets import scrub


def _flag(name: str, label: str, help_text: str, default: bool = False) -> ParamSpec:
    return ParamSpec(name, label, "bool", help_text, default=default)


TGI_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "temperature",
        "Temperature",
        "float",
        "Above 0; higher is more varied. Leave empty for greedy decoding.",
        minimum=0,
        maximum=100,
        exclusive_min=True,
        default=0.7,
        advanced=False,
    ),
    ParamSpec(
        "max_tokens",
        "Max new tokens",
        "int",
        "max_new_tokens: the longest reply, in tokens.",
        minimum=1,
        maximum=1_000_000,
        default=256,
        advanced=False,
    ),
    _flag(
        "stream",
        "Stream the reply",
        "Show the reply as it is generated (/generate_stream). "
        "best_of above 1 and decoder input details need it off.",
        default=True,
    ),
    _flag(
        "do_sample",
        "Sample (do_sample)",
        "Pick tokens at random by their probability instead of always the likeliest.",
    ),
    ParamSpec(
        "top_k", "Top K", "int", "Sample from the K likeliest tokens.", minimum=1, maximum=100_000
    ),
    ParamSpec(
        "top_p",
        "Top P",
        "float",
        "Nucleus sampling; strictly between 0 and 1.",
        minimum=0,
        maximum=1,
        exclusive_min=True,
        exclusive_max=True,
    ),
    ParamSpec(
        "typical_p",
        "Typical P",
        "float",
        "Typical decoding mass; strictly between 0 and 1.",
        minimum=0,
        maximum=1,
        exclusive_min=True,
        exclusive_max=True,
    ),
    ParamSpec(
        "repetition_penalty",
        "Repetition penalty",
        "float",
        "1.0 means no penalty; above 1 repeats less.",
        minimum=0,
        maximum=10,
        exclusive_min=True,
    ),
    ParamSpec(
        "stop",
        "Stop sequences",
        "text_list",
        "Generation stops after one of these (TGI keeps it in the text). One per line.",
        max_items=4,
    ),
    ParamSpec(
        "seed",
        "Seed",
        "int",
        "Random sampling seed (not with best_of above 1).",
        minimum=0,
        maximum=2**53 - 1,
    ),
    ParamSpec(
        "truncate",
        "Truncate input to",
        "int",
        "Keep only the last N tokens of the prompt.",
        minimum=1,
        maximum=10_000_000,
    ),
    ParamSpec(
        "best_of",
        "Best of",
        "int",
        "Generate N sequences and return the likeliest (needs sampling and Stream off).",
        minimum=1,
        maximum=16,
    ),
    _flag("return_full_text", "Return full text", "Prepend the prompt to the reply."),
    _flag("watermark", "Watermark", "Mark the text with a watermark (Kirchenbauer et al.)."),
    _flag("details", "Details", "Return token log-probabilities, the finish reason and seed."),
    _flag(
        "decoder_input_details",
        "Decoder input details",
        "Also return the prompt's tokens and log-probabilities (needs Stream off).",
    ),
)
_WIRE_NAMES = {"max_tokens": "max_new_tokens"}
_FINISH = {"eos_token": "stop"}  # TGI's own names, mapped to the common ones


def tgi_rules(values: dict[str, Any]) -> dict[str, str]:
    """TGI's rules between parameters (router/src/validation.rs), in plain words."""
    errors: dict[str, str] = {}
    best_of = values.get("best_of") or 1
    stream = values.get("stream", True)
    sampling = values.get("do_sample") or any(
        values.get(k) is not None for k in ("temperature", "top_k", "top_p", "typical_p")
    )
    if best_of > 1:
        if not sampling:
            errors["best_of"] = (
                "Best of above 1 needs sampling: turn on Sample or set Temperature, Top K, "
                "Top P or Typical P."
            )
        elif values.get("seed") is not None:
            errors["seed"] = "A seed cannot be used with Best of above 1; clear one of them."
        elif stream:
            errors["best_of"] = "Best of above 1 cannot be streamed: turn off Stream the reply."
    if values.get("decoder_input_details") and stream:
        errors["decoder_input_details"] = (
            "Decoder input details cannot be streamed: turn off Stream the reply."
        )
    return errors


SPEC = KindSpec(
    kind="tgi",
    label="Hugging Face TGI",
    description="Text Generation Inference's own API (/generate and /generate_stream): "
    "Hugging Face Inference Endpoints, DataCrunch, any TGI server. The conversation is turned "
    "into one prompt by the chat template you choose.",
    adapter="core.inference.tgi:TGIAdapter",
    params=TGI_PARAMS,
    param_rules=tgi_rules,
    url_placeholder="http://localhost:8080",
    url_help="The server's address: requests go to {URL}/generate and {URL}/generate_stream "
    "(DataCrunch: https://inference.datacrunch.io/v1/completions). For TGI's OpenAI-style "
    'Messages API use the OpenAI-compatible kind with {URL}/v1 and model "tgi".',
    needs_model=False,
    model_label="Model name (optional)",
    model_placeholder="llama-2-13b-chat",
    model_help='Sent as "model" when set: DataCrunch requires it, plain TGI ignores it.',
    settings_defaults={"chat_template": "plain"},
)


def _error_from_event(
    payload: dict[str, Any], url: str, secrets: tuple[str, ...]
) -> InferenceError:
    """TGI's `{"error": "...", "error_type": "..."}`, inside a 200 stream or as a body."""
    message = scrub(str(payload.get("error") or "unknown error"), secrets)
    kind = str(payload.get("error_type") or "")
    detail = scrub(f"error from {url}\n{json.dumps(payload)[:2000]}", secrets)
    if kind == "validation":
        return BadRequest(f"TGI refused the request: {message}", status=422, detail=detail)
    if kind == "overloaded":
        return RateLimited(
            f"The model is overloaded (TGI): {message}. Try again shortly.", detail=detail
        )
    if kind == "incomplete_generation_stream":
        return StreamInterrupted(f"TGI ended the reply early: {message}.", detail=detail)
    end = "" if message.endswith((".", "!", "?")) else "."
    return ServerError(f"TGI failed while generating: {message}{end} Try again.", detail=detail)


class TGIAdapter:
    def __init__(self, target: Target, client: httpx.Client | None = None) -> None:
        self.target = target
        self.http = HttpEndpoint.for_target(target, client, target.base_url.strip().rstrip("/"))
        self.template = prompts.resolve(target.settings, default="plain")

    def prompt(self, messages: list[Message]) -> str:
        # /generate tokenizes with special tokens, so TGI adds BOS itself.
        return prompts.render(self.template, messages, include_bos=False)

    def body(self, messages: list[Message], params: GenerationParams) -> dict[str, Any]:
        values = params.to_dict()
        values.pop("stream", None)
        parameters: dict[str, Any] = {}
        for name, value in values.items():
            parameters[_WIRE_NAMES.get(name, name)] = value
        stops = [*parameters.get("stop", []), *self.template.stop]
        if stops:  # the template's end-of-turn markers end the reply too (TGI allows four)
            parameters["stop"] = list(dict.fromkeys(stops))[:4]
        body: dict[str, Any] = {"inputs": self.prompt(messages), "parameters": parameters}
        if self.target.model:
            body["model"] = self.target.model
        return body

    def stream_chat(
        self, messages: list[Message], params: GenerationParams
    ) -> Generator[StreamEvent, None, None]:
        body = self.body(messages, params)
        if not params.extra.get("stream", True):
            yield from self._reply_events(self._generate(body))
            return
        response = self.http.send("POST", "generate_stream", body)
        try:
            if not is_event_stream(response):
                data = parse_json(response.read(), str(response.request.url), self.http.secrets)
                reply = self._parse(data, response)
                reply.text = self._stop_filter(body["parameters"]).apply(reply.text)
                yield from self._reply_events(reply)
                return
            yield from self._read_stream(response, body["parameters"])
        except httpx.TransportError as exc:
            raise transport_error(exc, str(response.request.url), self.http.timeouts) from None
        finally:
            response.close()

    def _stop_filter(self, parameters: dict[str, Any]) -> prompts.StopFilter:
        """Drops the template's end-of-turn markers, which TGI keeps in the text."""
        return prompts.StopFilter(() if parameters.get("return_full_text") else self.template.stop)

    def _read_stream(
        self, response: httpx.Response, parameters: dict[str, Any]
    ) -> Generator[StreamEvent, None, None]:
        url = str(response.request.url)
        tokens: list[dict[str, Any]] = []
        shown = self._stop_filter(parameters)
        for event in iter_sse(response):
            if not event.data:
                continue
            try:
                data = json.loads(event.data)
            except (ValueError, RecursionError):  # RecursionError: nested too deep to read
                raise BadResponse(
                    "The stream carried something that is not JSON.",
                    detail=scrub(event.data[:500], self.http.secrets),
                ) from None
            if not isinstance(data, dict):
                raise BadResponse(
                    "The stream carried JSON of an unexpected shape.",
                    detail=scrub(event.data[:500], self.http.secrets),
                )
            if "error" in data:
                raise _error_from_event(data, url, self.http.secrets)
            token = data.get("token")
            if not isinstance(token, dict):
                raise BadResponse(
                    "A stream event had no token: is this a TGI /generate_stream?",
                    detail=scrub(event.data[:500], self.http.secrets),
                )
            tokens.append(token)
            if token.get("text") and not token.get("special"):
                text = shown.feed(str(token["text"]))
                if text:
                    yield TextDelta(text)
            if data.get("generated_text") is not None:
                if rest := shown.flush():
                    yield TextDelta(rest)
                final = data["details"] if isinstance(data.get("details"), dict) else {}
                if parameters.get("details"):
                    yield Details({**final, "tokens": tokens})
                yield Usage(
                    token_count(final.get("input_length")),
                    token_count(final.get("generated_tokens")) or len(tokens),
                )
                if final.get("finish_reason"):  # only sent with details on
                    reason = finish_reason(final["finish_reason"]) or "unknown"
                    yield Finish(_FINISH.get(reason, reason))
                return
        raise StreamInterrupted(
            "The reply stopped before TGI sent its last event. What arrived is kept.",
            detail=f"stream from {url} ended without generated_text",
        )

    def _generate(self, body: dict[str, Any]) -> Reply:
        response = self.http.send("POST", "generate", body)
        try:
            data = parse_json(response.read(), str(response.request.url), self.http.secrets)
        except httpx.TransportError as exc:
            raise transport_error(exc, str(response.request.url), self.http.timeouts) from None
        finally:
            response.close()
        reply = self._parse(data, response)
        reply.text = self._stop_filter(body["parameters"]).apply(reply.text)
        return reply

    def _parse(self, data: Any, response: httpx.Response) -> Reply:
        item = data[0] if isinstance(data, list) and data else data  # POST / wraps it in a list
        if not isinstance(item, dict) or not isinstance(item.get("generated_text"), str):
            raise BadResponse(
                "The reply did not have TGI's shape (no generated_text). Is this a TGI server?",
                detail=scrub(json.dumps(data)[:2000], self.http.secrets),
            )
        details = item.get("details") if isinstance(item.get("details"), dict) else None
        prompt_tokens = token_count(response.headers.get("x-prompt-tokens"))
        generated = token_count((details or {}).get("generated_tokens")) or token_count(
            response.headers.get("x-generated-tokens")
        )
        reason = finish_reason((details or {}).get("finish_reason"))
        return Reply(
            item["generated_text"],
            _FINISH.get(reason, reason) if reason else None,
            Usage(prompt_tokens, generated),
            details,
        )

    @staticmethod
    def _reply_events(reply: Reply) -> Generator[StreamEvent, None, None]:
        if reply.text:
            yield TextDelta(reply.text)
        if reply.details:
            yield Details(reply.details)
        if reply.usage:
            yield reply.usage
        if reply.finish_reason:
            yield Finish(reply.finish_reason)

    def chat(self, messages: list[Message], params: GenerationParams) -> Reply:
        return self._generate(self.body(messages, params))

    def info(self) -> dict[str, Any]:
        data = self.http.get_json("info", retry=NO_RETRY)
        if not isinstance(data, dict) or "model_id" not in data:
            raise BadResponse(
                "/info did not describe a model: is this a TGI server?",
                detail=scrub(json.dumps(data)[:2000], self.http.secrets),
            )
        return data

    def list_remote_models(self) -> list[str]:
        return [str(self.info()["model_id"])]

    def test_connection(self) -> ConnectionReport:
        report = ConnectionReport()
        if not checks.resolve(self.http.base_url, report):
            return report
        try:
            info = self.info()
        except Exception as exc:  # noqa: BLE001 — every failure becomes a report line
            failure = checks.classify(exc)
            if failure.layer in ("Connection", "TLS"):
                return report.failed(failure.layer, failure.message)
            report.passed("Connection", "The server answers.")
            report.passed("Server info", "No /info here (not plain TGI?); trying a generation.")
        else:
            total = info.get("max_total_tokens")
            report.info.update(info)
            report.remote_models = [str(info["model_id"])]
            report.passed("Connection", "The server answers.")
            report.passed(
                "Server info",
                f"TGI {info.get('version', '?')} serving {info['model_id']}: up to "
                f"{info.get('max_input_tokens') or info.get('max_input_length')} input and "
                f"{total} total tokens.",
            )
        try:
            reply = self._generate(
                self.body([Message("user", "Say hi.")], GenerationParams(max_tokens=1))
            )
        except Exception as exc:  # noqa: BLE001
            failure = checks.classify(exc, model=self.target.model)
            return report.failed(failure.layer, failure.message)
        report.passed("Generation", f"/generate answered: {reply.text[:60]!r}.")
        return report
