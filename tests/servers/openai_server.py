"""A protocol-faithful OpenAI Chat Completions server (protocols.md §1) for tests.

Routes: GET /v1/models, POST /v1/chat/completions (streaming and not, `stream_options`
usage chunk, OpenAI error bodies). The reply is deterministic: "Echo: <last user message>",
streamed one word per chunk, unless `server.reply` scripts another text.

Faults (queued with `server.fault(name, times=1, **options)`):
  status(status, body?, headers?)   any HTTP error with an OpenAI error body
  html                              502 with an HTML page (a proxy in front of a dead server)
  not_json                          200 whose body (or stream data) is not JSON
  wrong_shape                       200 JSON that is not a chat completion
  error_event(after=2)              an error event inside a 200 stream after `after` chunks
  cut(after=2)                      the connection drops mid-stream (no terminating chunk)
  truncated(after=2)                the stream ends cleanly but without finish_reason/[DONE]
  slow_headers(seconds)             wait before sending the response head
  stall(after=2, seconds)           stop sending mid-stream
  empty                             an empty reply ("" content)
  ignore_stream                     answer a streaming request with one JSON body
  large(size, word="lorem ")        a reply of about `size` bytes, `word` repeated (one
                                    chunk per word: a long word keeps a 5 MB stream quick)
Persistent quirks (attributes): `reject_stream_options`, `reject_max_tokens`, `no_usage`,
`no_space` (`data:` without a space), `keepalive` (": ping" comments between events).
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.servers.base import Handler, Recorded, TestHTTPServer

HTML_PAGE = b"""<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>
<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"""


def _error(
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class OpenAITestServer(TestHTTPServer):
    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: tuple[str, ...] = ("test-model", "echo-1"),
        chunk_delay: float = 0.0,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.models = models
        self.chunk_delay = chunk_delay
        self.reply: str | None = None
        self.reject_stream_options = False
        self.reject_max_tokens = False
        self.no_usage = False
        self.no_space = False
        self.keepalive = False
        self.remember_settings(
            (
                "api_key",
                "models",
                "chunk_delay",
                "reply",
                "reject_stream_options",
                "reject_max_tokens",
                "no_usage",
                "no_space",
                "keepalive",
            )
        )

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    # --- routing -----------------------------------------------------------------------------

    def route(self, h: Handler, request: Recorded) -> None:
        path = request.path.split("?")[0]
        if not path.startswith("/v1/"):
            h.send_bytes(404, b"404 page not found", "text/plain")
            return
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
            shown = f"{given[:5]}***{given[-4:]}" if len(given) > 9 else "(none)"
            h.send_json(
                401, _error(f"Incorrect API key provided: {shown}.", code="invalid_api_key")
            )
            return
        fault = self.take_fault()
        if fault and self._general_fault(h, fault):
            return
        if path == "/v1/models" and request.method == "GET":
            data = [
                {"id": m, "object": "model", "created": 1686935002, "owned_by": "plugboard-tests"}
                for m in self.models
            ]
            h.send_json(200, {"object": "list", "data": data})
        elif path == "/v1/chat/completions" and request.method == "POST":
            self._chat(h, request, fault)
        else:
            h.send_json(404, _error(f"Unknown path {path}", code="not_found"))

    def _general_fault(self, h: Handler, fault: Any) -> bool:
        o = fault.options
        if fault.name == "status":
            body = o.get("body") or _error(
                o.get("message", f"Simulated error {o['status']}"),
                o.get("type", "server_error"),
                o.get("code"),
            )
            h.send_json(o["status"], body, o.get("headers"))
        elif fault.name == "html":
            h.send_bytes(502, HTML_PAGE, "text/html")
        elif fault.name == "slow_headers":
            time.sleep(o.get("seconds", 2))
            return False
        else:
            return False
        return True

    # --- chat ----------------------------------------------------------------------------------

    def _chat(self, h: Handler, request: Recorded, fault: Any) -> None:
        try:
            body = request.json()
        except ValueError:
            h.send_json(400, _error("We could not parse the JSON body of your request."))
            return
        problem = self._validate(body)
        if problem:
            status, payload = problem
            h.send_json(status, payload)
            return
        words = self._reply_words(body, fault)
        if body.get("stream") and not (fault and fault.name == "ignore_stream"):
            self._stream(h, body, words, fault)
        else:
            self._complete(h, body, words, fault)

    def _validate(self, body: Any) -> tuple[int, dict[str, Any]] | None:
        if not isinstance(body, dict) or not body.get("messages"):
            return 400, _error("'messages' is a required property", param="messages")
        if body.get("model") not in self.models:
            return 404, _error(
                f"The model `{body.get('model')}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        if "stream_options" in body and (self.reject_stream_options or not body.get("stream")):
            return 400, _error(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled."
                if not body.get("stream")
                else "Unrecognized request argument supplied: stream_options",
                param="stream_options",
            )
        if "max_tokens" in body and self.reject_max_tokens:
            return 400, _error(
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                param="max_tokens",
                code="unsupported_parameter",
            )
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 2:
            return 400, _error(
                f"{temperature} is greater than the maximum of 2 - 'temperature'",
                param="temperature",
            )
        return None

    def _reply_words(self, body: dict[str, Any], fault: Any) -> list[str]:
        if fault and fault.name == "empty":
            return []
        if fault and fault.name == "large":
            size = fault.options.get("size", 5_000_000)
            word = fault.options.get("word", "lorem ")
            return [word] * (size // len(word))
        text = self.reply
        if text is None:
            last_user = next(
                (
                    m.get("content", "")
                    for m in reversed(body["messages"])
                    if m.get("role") == "user"
                ),
                "",
            )
            text = f"Echo: {last_user}"
        words = text.split(" ")
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit:
            words = words[:limit]
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    @staticmethod
    def _usage(body: dict[str, Any], words: list[str]) -> dict[str, int]:
        prompt = sum(len(str(m.get("content", "")).split()) + 4 for m in body["messages"])
        return {
            "prompt_tokens": prompt,
            "completion_tokens": len(words),
            "total_tokens": prompt + len(words),
        }

    def _complete(self, h: Handler, body: dict[str, Any], words: list[str], fault: Any) -> None:
        if fault and fault.name == "not_json":
            h.send_bytes(200, b"Service is up. Try /docs for the API.", "text/plain")
            return
        if fault and fault.name == "wrong_shape":
            h.send_json(200, {"result": "".join(words)})
            return
        truncated = bool(body.get("max_tokens") and len(words) >= body["max_tokens"])
        h.send_json(
            200,
            {
                "id": "chatcmpl-test123",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(words),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "length" if truncated else "stop",
                    }
                ],
                "usage": self._usage(body, words),
            },
        )

    def _event(self, payload: Any) -> bytes:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        prefix = "data:" if self.no_space else "data: "
        ping = b": ping\n\n" if self.keepalive else b""
        return ping + f"{prefix}{data}\n\n".encode()

    def _chunk(
        self, body: dict[str, Any], delta: dict[str, Any], finish: str | None, include_usage: bool
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": "chatcmpl-test123",
            "object": "chat.completion.chunk",
            "created": 1694268190,
            "model": body["model"],
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            chunk["usage"] = None
        return chunk

    def _stream(self, h: Handler, body: dict[str, Any], words: list[str], fault: Any) -> None:
        include_usage = (
            bool((body.get("stream_options") or {}).get("include_usage")) and not self.no_usage
        )
        h.start_chunked()
        if fault and fault.name == "not_json":
            h.write_chunk(self._event("this is not json"))
            h.end_chunked()
            return
        if fault and fault.name == "wrong_shape":
            h.write_chunk(self._event({"result": "no choices here"}))
            h.write_chunk(self._event("[DONE]"))
            h.end_chunked()
            return
        events = [self._chunk(body, {"role": "assistant", "content": ""}, None, include_usage)]
        events += [self._chunk(body, {"content": w}, None, include_usage) for w in words]
        after = fault.options.get("after", 2) if fault else 0
        for i, event in enumerate(events):
            if i and self.chunk_delay:
                time.sleep(self.chunk_delay)
            if fault and i == after + 1:
                said = fault.options.get("message", "The model crashed while generating.")
                error = {"message": said, "type": "server_error", "param": None, "code": None}
                if h.stream_fault(fault, self._event({"error": error}), stall=3):
                    return
            h.write_chunk(self._event(event))
        truncated = bool(body.get("max_tokens") and len(words) >= body["max_tokens"])
        h.write_chunk(
            self._event(self._chunk(body, {}, "length" if truncated else "stop", include_usage))
        )
        if include_usage:
            h.write_chunk(
                self._event(
                    {
                        "id": "chatcmpl-test123",
                        "object": "chat.completion.chunk",
                        "created": 1694268190,
                        "model": body["model"],
                        "choices": [],
                        "usage": self._usage(body, words),
                    }
                )
            )
        h.write_chunk(self._event("[DONE]"))
        h.end_chunked()


def main() -> None:  # python -m tests.servers.openai_server [port]
    import sys

    server = OpenAITestServer(
        port=int(sys.argv[1]) if len(sys.argv) > 1 else 8765, chunk_delay=0.05
    )
    print(f"OpenAI-compatible test server on {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
