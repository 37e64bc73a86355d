"""A protocol-faithful Hugging Face Text Generation Inference server (protocols.md §2).

Routes: POST /generate, POST /generate_stream, POST /v1/chat/completions (the Messages API),
GET /info, /health, /v1/models. Validation follows TGI's router (`validation.rs`): the same
rules and the same messages, as 422 JSON on /generate and as an error event inside a 200
stream on /generate_stream. SSE is written like axum: `data:` with no space, no `[DONE]` on
/generate_stream, optional `:` keep-alive comments.

The reply is deterministic: `server.reply` (default a fixed sentence) split into word tokens,
each with a log-probability; one token in five is "unlikely" (logprob -3.5).

Faults (`server.fault(name, **options)`): status(status, error, error_type, headers?) — any
error JSON; error_event(after=2) — a generation error mid-stream; cut(after=2) — the connection
drops; overloaded — 429 `Model is overloaded`; html — 502 with an nginx HTML page (a proxy in
front of a dead server); slow_headers(seconds=2) — wait before answering; stall(after=2,
seconds=2) — stop sending mid-stream for a while; truncated(after=2) — the stream ends cleanly
without its last (generated_text) event; not_json — a stream event that is not JSON;
wrong_shape — a stream event of another shape (no token).
Quirks: `keepalive` (a `:` comment between events), `api_key` (401 with an empty body).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from tests.servers.base import Fault, Handler, Recorded, TestHTTPServer

HTML_PAGE = b"""<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>
<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"""

DEFAULT_REPLY = (
    "Deep learning is a kind of machine learning that uses neural networks with many layers."
)


class TGITestServer(TestHTTPServer):
    def __init__(
        self,
        *,
        model_id: str = "meta-llama/Llama-3.1-8B-Instruct",
        max_input_tokens: int = 1024,
        max_total_tokens: int = 2048,
        max_best_of: int = 2,
        max_stop_sequences: int = 4,
        api_key: str | None = None,
        chunk_delay: float = 0.0,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.model_id = model_id
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.max_best_of = max_best_of
        self.max_stop_sequences = max_stop_sequences
        self.api_key = api_key
        self.chunk_delay = chunk_delay
        self.reply = DEFAULT_REPLY
        self.keepalive = False
        self.remember_settings(_RESETTABLE)

    # --- routing -------------------------------------------------------------------------------

    def route(self, h: Handler, request: Recorded) -> None:
        path = request.path.split("?")[0]
        if request.method == "GET":
            self._get(h, path)
            return
        if (
            self.api_key
            and request.headers.get("authorization", "").lower() != f"bearer {self.api_key}".lower()
        ):
            h.send_bytes(401, b"", "text/plain")  # TGI's auth middleware: empty body
            return
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            h.send_bytes(
                415, b"Expected request with `Content-Type: application/json`", "text/plain"
            )
            return
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            h.send_bytes(
                400, f"Failed to parse the request body as JSON: {exc}".encode(), "text/plain"
            )
            return
        fault = self.take_fault()
        if fault and fault.name == "status":
            o = fault.options
            h.send_json(
                o["status"],
                {
                    "error": o.get("error", "Request failed during generation: boom"),
                    "error_type": o.get("error_type", "generation"),
                },
                o.get("headers"),
            )
            return
        if fault and fault.name == "overloaded":
            h.send_json(429, {"error": "Model is overloaded", "error_type": "overloaded"})
            return
        if fault and fault.name == "html":
            h.send_bytes(502, HTML_PAGE, "text/html")
            return
        if fault and fault.name == "slow_headers":
            time.sleep(fault.options.get("seconds", 2))
        if path in ("/generate", "/generate_stream"):
            problem = self._parse(body)
            if isinstance(problem, str):
                h.send_bytes(422, problem.encode(), "text/plain")
                return
            stream = path == "/generate_stream"
            error = self._validate(body, stream)
            if error:
                self._error(h, stream, error, "validation", 422)
                return
            if stream:
                self._generate_stream(h, body, fault)
            else:
                self._generate(h, body)
        elif path == "/v1/chat/completions":
            self._chat(h, body, fault)
        else:
            h.send_bytes(404, b"", "text/plain")

    def _get(self, h: Handler, path: str) -> None:
        if path == "/info":
            h.send_json(200, self.info())
        elif path == "/health":
            h.send_bytes(200, b"", "text/plain")
        elif path == "/v1/models":
            h.send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": self.model_id,
                            "object": "model",
                            "created": 0,
                            "owned_by": self.model_id,
                        }
                    ],
                },
            )
        else:
            h.send_bytes(404, b"", "text/plain")

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_sha": "0e9e39f249a16976918f6564b8830bc894c89659",
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": 128,
            "max_best_of": self.max_best_of,
            "max_stop_sequences": self.max_stop_sequences,
            "max_input_tokens": self.max_input_tokens,
            "max_total_tokens": self.max_total_tokens,
            "validation_workers": 2,
            "max_client_batch_size": 4,
            "router": "text-generation-router",
            "version": "3.3.6-dev0",
            "sha": None,
            "docker_label": None,
        }

    # --- validation (router/src/validation.rs) ------------------------------------------------

    @staticmethod
    def _parse(body: Any) -> str | None:
        """Serde-level problems: TGI answers these with plain text 422."""
        prefix = "Failed to deserialize the JSON body into the target type: "
        if not isinstance(body, dict) or "inputs" not in body:
            return prefix + "missing field `inputs`"
        if not isinstance(body["inputs"], str):
            return prefix + "inputs: invalid type: expected a string"
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            return prefix + "parameters: invalid type: expected struct GenerateParameters"
        if "stop" in params and not isinstance(params["stop"], list):
            return prefix + "parameters.stop: invalid type: string, expected a sequence"
        seed = params.get("seed")
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            return prefix + "parameters.seed: invalid value: integer, expected u64"
        return None

    def _validate(self, body: dict[str, Any], stream: bool) -> str | None:
        p = body.get("parameters") or {}
        inputs = body["inputs"]
        best_of = p.get("best_of")
        sampling = p.get("do_sample") or any(
            p.get(k) is not None for k in ("temperature", "top_k", "top_p", "typical_p")
        )
        if best_of is not None and best_of != 1:
            if stream:
                return "`best_of` != 1 is not supported when streaming tokens"
            if self.max_best_of == 1:
                return "`best_of` != 1 is not allowed for this endpoint"
            if best_of <= 0 or best_of > self.max_best_of:
                return f"`best_of` must be > 0 and <= {self.max_best_of}. Given: {best_of}"
            if not sampling:
                return "you must use sampling when `best_of` is > 1"
            if p.get("seed") is not None:
                return "`seed` must not be set when `best_of` > 1"
        if stream and p.get("decoder_input_details"):
            return "`decoder_input_details` == true is not supported when streaming tokens"
        checks = [
            ("temperature", lambda v: v > 0, "`temperature` must be strictly positive"),
            (
                "repetition_penalty",
                lambda v: v > 0,
                "`repetition_penalty` must be strictly positive",
            ),
            ("top_p", lambda v: 0 < v < 1, "`top_p` must be > 0.0 and < 1.0"),
            ("typical_p", lambda v: 0 < v < 1, "`typical_p` must be > 0.0 and < 1.0"),
            ("top_k", lambda v: v > 0, "`top_k` must be strictly positive"),
            ("max_new_tokens", lambda v: v > 0, "`max_new_tokens` must be strictly positive"),
        ]
        for key, ok, message in checks:
            if p.get(key) is not None and not ok(p[key]):
                return message
        if len(p.get("stop") or []) > self.max_stop_sequences:
            return f"`stop` supports up to {self.max_stop_sequences} stop sequences. Given: {len(p['stop'])}"
        truncate = p.get("truncate")
        if truncate is not None and (truncate == 0 or truncate > self.max_input_tokens):
            return f"`truncate` must be strictly positive and less than {self.max_input_tokens}. Given: {truncate}"
        if not inputs:
            return "`inputs` cannot be empty"
        input_length = self._count(inputs)
        if truncate:
            input_length = min(input_length, truncate)
        if input_length > self.max_input_tokens:
            return f"`inputs` must have less than {self.max_input_tokens} tokens. Given: {input_length}"
        max_new = p.get("max_new_tokens")
        if max_new is not None and input_length + max_new > self.max_total_tokens:
            return f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. Given: {input_length} `inputs` tokens and {max_new} `max_new_tokens`"
        return None

    @staticmethod
    def _count(text: str) -> int:
        return max(1, len(text.split()))

    def _error(self, h: Handler, stream: bool, message: str, error_type: str, status: int) -> None:
        text = f"Input validation error: {message}" if error_type == "validation" else message
        payload = {"error": text, "error_type": error_type}
        if stream:  # errors never change the status of a stream: one event inside a 200
            h.start_chunked()
            h.write_chunk(f"data:{json.dumps(payload)}\n\n".encode())
            h.end_chunked()
        else:
            h.send_json(status, payload)

    # --- generation --------------------------------------------------------------------------

    def _tokens(self, p: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """The generated tokens and the finish reason for these parameters."""
        words = self.reply.split(" ")
        texts = [w if i == 0 else " " + w for i, w in enumerate(words)]
        tokens: list[dict[str, Any]] = []
        finish = "eos_token"
        generated = ""
        for i, text in enumerate(texts):
            if p.get("max_new_tokens") and len(tokens) >= p["max_new_tokens"]:
                finish = "length"
                break
            generated += text
            tokens.append(
                {
                    "id": 1000 + i,
                    "text": text,
                    "logprob": -3.5 if i % 5 == 3 else -0.05 * (i % 4),
                    "special": False,
                }
            )
            if any(s and s in generated for s in p.get("stop") or []):
                finish = "stop_sequence"
                break
        if finish == "eos_token":
            tokens.append({"id": 2, "text": "</s>", "logprob": -0.11, "special": True})
        return tokens, finish

    def _seed(self, p: dict[str, Any]) -> int | None:
        sampling = p.get("do_sample") or p.get("temperature") is not None
        if not sampling:
            return None
        return p.get("seed") if p.get("seed") is not None else random.randint(0, 2**63)

    def _details(
        self, body: dict[str, Any], tokens: list[dict[str, Any]], finish: str
    ) -> dict[str, Any]:
        p = body.get("parameters") or {}
        details: dict[str, Any] = {
            "finish_reason": finish,
            "generated_tokens": len(tokens),
            "seed": self._seed(p),
            "prefill": [],
            "tokens": tokens,
        }
        if p.get("decoder_input_details"):
            words = body["inputs"].split()
            details["prefill"] = [
                {"id": 500 + i, "text": w, "logprob": None if i == 0 else -1.0}
                for i, w in enumerate(words[:20])
            ]
        if (p.get("best_of") or 1) > 1:
            details["best_of_sequences"] = [
                {
                    "generated_text": f"Alternative {n}: " + self.reply,
                    "finish_reason": finish,
                    "generated_tokens": len(tokens) + 2,
                    "seed": random.randint(0, 2**63),
                    "prefill": [],
                    "tokens": tokens,
                }
                for n in range(1, p["best_of"])
            ]
        return details

    def _generate(self, h: Handler, body: dict[str, Any]) -> None:
        p = body.get("parameters") or {}
        tokens, finish = self._tokens(p)
        text = "".join(t["text"] for t in tokens if not t["special"])
        if p.get("return_full_text"):
            text = body["inputs"] + text
        payload: dict[str, Any] = {"generated_text": text}
        if p.get("details") or p.get("decoder_input_details"):
            payload["details"] = self._details(body, tokens, finish)
        h.send_json(
            200,
            payload,
            {
                "x-prompt-tokens": str(self._count(body["inputs"])),
                "x-generated-tokens": str(len(tokens)),
            },
        )

    def _generate_stream(self, h: Handler, body: dict[str, Any], fault: Fault | None) -> None:
        p = body.get("parameters") or {}
        tokens, finish = self._tokens(p)
        h.start_chunked()
        if fault and fault.name in ("not_json", "wrong_shape"):
            data = b"not json" if fault.name == "not_json" else b'{"generated": "Hello"}'
            h.write_chunk(b"data:" + data + b"\n\n")
            h.end_chunked()
            return
        after = fault.options.get("after", 2) if fault else -1
        generated = ""
        for i, token in enumerate(tokens):
            if i and self.chunk_delay:
                time.sleep(self.chunk_delay)
            if fault and i == after and h.stream_fault(fault, GENERATION_ERROR_EVENT):
                return
            if not token["special"]:
                generated += token["text"]
            last = i == len(tokens) - 1
            event: dict[str, Any] = {
                "index": i + 1,
                "token": token,
                "generated_text": None,
                "details": None,
            }
            if last:
                full = body["inputs"] + generated if p.get("return_full_text") else generated
                event["generated_text"] = full
                if p.get("details"):
                    event["details"] = {
                        "finish_reason": finish,
                        "generated_tokens": len(tokens),
                        "seed": self._seed(p),
                        "input_length": self._count(body["inputs"]),
                    }
            if self.keepalive:
                h.write_chunk(b":\n\n")
            h.write_chunk(f"data:{json.dumps(event)}\n\n".encode())
        h.end_chunked()

    # --- Messages API (/v1/chat/completions) --------------------------------------------------

    def _chat(self, h: Handler, body: dict[str, Any], fault: Fault | None) -> None:
        params: dict[str, Any] = {}
        temperature = body.get("temperature")
        if temperature is not None and temperature != 0:
            params["temperature"] = temperature
        for key in ("top_p", "seed", "stop"):
            if body.get(key) is not None:
                params[key] = body[key]
        if body.get("max_tokens") is not None:
            params["max_new_tokens"] = body["max_tokens"]
        if "stop" in params and not isinstance(params["stop"], list):
            h.send_bytes(
                422,
                b"Failed to deserialize the JSON body into the target type: stop: invalid type: string, expected a sequence",
                "text/plain",
            )
            return
        stream = bool(body.get("stream"))
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        error = self._validate({"inputs": prompt or "x", "parameters": params}, stream=False)
        model = self.model_id if body.get("model") in (None, "tgi") else body["model"]
        if error:
            if stream:
                h.start_chunked()
                h.write_chunk(
                    f"data:{json.dumps({'error': {'message': f'Input validation error: {error}', 'http_status_code': 422}})}\n\n".encode()
                )
                h.write_chunk(b"data:[DONE]\n\n")
                h.end_chunked()
            else:
                h.send_json(
                    422, {"error": f"Input validation error: {error}", "error_type": "validation"}
                )
            return
        tokens, finish = self._tokens(params)
        reason = {"eos_token": "stop"}.get(finish, finish)
        usage = {
            "prompt_tokens": self._count(prompt),
            "completion_tokens": len(tokens),
            "total_tokens": self._count(prompt) + len(tokens),
        }
        base = {
            "id": "",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "3.3.6-dev0-native",
        }
        if not stream:
            text = "".join(t["text"] for t in tokens if not t["special"])
            h.send_json(
                200,
                {
                    "object": "chat.completion",
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": None,
                            "finish_reason": reason,
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        h.start_chunked()
        for i, token in enumerate(tokens):
            if i and self.chunk_delay:
                time.sleep(self.chunk_delay)
            last = i == len(tokens) - 1
            content = "" if token["special"] else token["text"]
            chunk = {
                "object": "chat.completion.chunk",
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": content},
                        "logprobs": None,
                        "finish_reason": reason if last else None,
                    }
                ],
                "usage": None,
            }
            h.write_chunk(f"data:{json.dumps(chunk)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            h.write_chunk(
                f"data:{json.dumps({'object': 'chat.completion.chunk', **base, 'choices': [], 'usage': usage})}\n\n".encode()
            )
        h.write_chunk(b"data:[DONE]\n\n")
        h.end_chunked()


GENERATION_ERROR_EVENT = (
    b'data:{"error":"Request failed during generation: CUDA out of memory",'
    b'"error_type":"generation"}\n\n'
)

_RESETTABLE = {
    "model_id",
    "max_input_tokens",
    "max_total_tokens",
    "max_best_of",
    "max_stop_sequences",
    "api_key",
    "chunk_delay",
    "reply",
    "keepalive",
}
