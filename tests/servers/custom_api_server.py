"""Foreign APIs for the Custom API (JSONata) kind, all on one port (protocols.md §1, §5).

Routes (POST only):
  /v1/chat/completions                   an OpenAI-style chat API like Together AI: bearer
                                         `server.token` required, `model` required, OpenAI
                                         error bodies; the reply is "Echo: <last user message>"
                                         ("Echo 2: …" for the second of n choices)
  /serving-endpoints/<name>/invocations  a Databricks serving endpoint: bearer `server.token`,
                                         Databricks error bodies ({"error_code", "message"}),
                                         an OpenAI-chat-shaped reply; names in `endpoints`
  /guardrail                             takes DynamoEval's standard batch as is and answers a
                                         JSON list of booleans, N per conversation: true when a
                                         message contains `server.flag_word` (no auth unless
                                         `server.guardrail_token`)
  /echo-batch                            takes the standard batch and answers one string per
                                         conversation (N per conversation when N > 1):
                                         "Reply to: <last message>" ("Reply 2 to: …")
  /keyed/echo-batch                      /echo-batch behind an API key in a custom header:
                                         `{api_key_header}: {api_key_prefix} {api_key}`, or the
                                         bare key when the prefix is empty; a wrong key gets a
                                         401 whose body repeats what was received

The standard batch is checked the way a strict FastAPI service would (422 with `detail`).

Faults (`server.fault(name, times=1, **options)`), taken per request on any route:
  status(status, body?, headers?)  any status with a JSON body ({"error": …} by default)
  rate_limit(retry_after=0)        429 with a Retry-After header
  server_error                     500 {"error": "Internal server error"}
  echo_auth(status=500)            an error body that repeats the Authorization header
  html                             502 with an nginx HTML page
  not_json                         200 text/plain that is not JSON
  wrong_shape                      200 JSON of another shape ({"result": {"text": …}})
  wrong_count                      the normal reply with its last item missing
  slow(seconds=1)                  wait before answering (then answer normally)
  cut                              close the connection without any response
  cut_body                         the normal reply's head and half its body, then the
                                   connection drops
  stall(seconds=2)                 the normal reply's head and half its body, a pause, the rest
  error_body                       200 whose JSON is an error ({"error": {"message": …}})
  empty                            the normal reply with every text empty
  large(size=5_000_000)            the normal reply with every text about `size` bytes long
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.servers.base import Fault, Handler, Recorded, TestHTTPServer

HTML_PAGE = b"""<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>
<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"""

ROLES = ("system", "user", "assistant")


def _openai_error(message: str, type_: str = "invalid_request_error", code: str | None = None):
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class CustomAPITestServer(TestHTTPServer):
    def __init__(
        self,
        *,
        token: str = "tok-together-0123456789abcdef",
        api_key: str = "key-custom-0123456789abcdef",
        api_key_header: str = "X-API-Key",
        api_key_prefix: str = "Token",
        flag_word: str = "attack",
        endpoints: tuple[str, ...] = ("databricks-dbrx-instruct",),
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.token = token
        self.api_key = api_key
        self.api_key_header = api_key_header
        self.api_key_prefix = api_key_prefix
        self.flag_word = flag_word
        self.endpoints = endpoints
        self.guardrail_token: str | None = None
        self.remember_settings(_RESETTABLE)

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in list(self.requests) if r.path.split("?")[0] == path]

    # --- routing -------------------------------------------------------------------------------

    def route(self, h: Handler, request: Recorded) -> None:
        path = request.path.split("?")[0]
        fault = self.take_fault()
        if fault and self._fault(h, request, fault):
            return
        if request.method != "POST":
            h.send_json(405, {"detail": "Method Not Allowed"}, {"Allow": "POST"})
            return
        try:
            body = request.json()
        except ValueError:
            h.send_json(400, {"detail": "The body is not valid JSON."})
            return
        if path == "/v1/chat/completions":
            reply = self._openai(h, request, body)
        elif path.startswith("/serving-endpoints/") and path.endswith("/invocations"):
            reply = self._databricks(h, request, body, path.split("/")[2])
        elif path == "/guardrail":
            reply = self._guardrail(h, request, body)
        elif path == "/echo-batch":
            reply = self._echo_batch(h, body)
        elif path == "/keyed/echo-batch":
            reply = self._keyed(h, request, body)
        else:
            h.send_json(404, {"detail": "Not Found"})
            return
        if reply is None:
            return
        if fault and fault.name == "wrong_count" and isinstance(reply, list):
            reply = reply[:-1]
        if fault and fault.name in ("empty", "large"):
            size = fault.options.get("size", 5_000_000) if fault.name == "large" else 0
            reply = _with_text(reply, "x" * size)
        if fault and fault.name in ("cut_body", "stall"):
            self._send_in_two(h, json.dumps(reply).encode(), fault)
            return
        h.send_json(200, reply)

    @staticmethod
    def _send_in_two(h: Handler, body: bytes, fault: Fault) -> None:
        """The head and half the body; then the connection drops, or the rest after a pause."""
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        half = len(body) // 2
        h.wfile.write(body[:half])
        h.wfile.flush()
        if fault.name == "cut_body":
            h.cut()
            return
        time.sleep(fault.options.get("seconds", 2.0))
        h.wfile.write(body[half:])

    def _fault(self, h: Handler, request: Recorded, fault: Fault) -> bool:
        """Serve the fault; False when the request should go on to its route."""
        o = fault.options
        if fault.name == "status":
            h.send_json(
                o["status"],
                o.get("body") or {"error": f"Simulated {o['status']}"},
                o.get("headers"),
            )
        elif fault.name == "rate_limit":
            h.send_json(
                429,
                {"error": "Too many requests, slow down."},
                {"Retry-After": str(o.get("retry_after", 0))},
            )
        elif fault.name == "server_error":
            h.send_json(500, {"error": "Internal server error"})
        elif fault.name == "echo_auth":
            received = request.headers.get("authorization", "(none)")
            h.send_json(o.get("status", 500), {"error": f"Upstream refused {received}"})
        elif fault.name == "html":
            h.send_bytes(502, HTML_PAGE, "text/html")
        elif fault.name == "not_json":
            h.send_bytes(200, b"OK, request received.", "text/plain")
        elif fault.name == "wrong_shape":
            h.send_json(200, {"result": {"text": "Hello from somewhere else"}})
        elif fault.name == "error_body":
            h.send_json(
                200,
                {
                    "error": {
                        "message": o.get("message", "The model crashed while generating."),
                        "type": "server_error",
                    }
                },
            )
        elif fault.name == "slow":
            time.sleep(o.get("seconds", 1.0))
            return False
        elif fault.name == "cut":
            h.close_connection = True
            h.connection.shutdown(2)
        else:
            return False
        return True

    # --- (a) OpenAI-style chat, Together-like --------------------------------------------------

    @staticmethod
    def _chat_messages(body: Any) -> list[dict[str, Any]] | str:
        """The messages of an OpenAI-style body, or what is wrong with them."""
        if not isinstance(body, dict):
            return "The request body must be a JSON object."
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages must be a non-empty array of message objects."
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                return f"messages[{i}] must be an object (got {type(m).__name__})."
            if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                return f"messages[{i}] needs a role (system, user or assistant) and text content."
        return messages

    @staticmethod
    def _chat_completion(
        messages: list[dict[str, Any]], body: dict[str, Any], model: str
    ) -> dict[str, Any]:
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        n = body.get("n") or 1
        contents = [f"Echo: {last}" if i == 0 else f"Echo {i + 1}: {last}" for i in range(int(n))]
        words = sum(len(m["content"].split()) for m in messages)
        return {
            "id": "chatcmpl-8f2c0e1b",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
                for i, text in enumerate(contents)
            ],
            "usage": {
                "prompt_tokens": words,
                "completion_tokens": sum(len(c.split()) for c in contents),
                "total_tokens": words + sum(len(c.split()) for c in contents),
            },
        }

    def _openai(self, h: Handler, request: Recorded, body: Any) -> dict[str, Any] | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            h.send_json(
                401,
                _openai_error(
                    "Invalid API key provided. You can find your API key at "
                    "https://api.together.xyz/settings/api-keys.",
                    code="invalid_api_key",
                ),
            )
            return None
        messages = self._chat_messages(body)
        if isinstance(messages, str):
            h.send_json(400, _openai_error(messages))
            return None
        model = body.get("model")
        if not isinstance(model, str) or not model:
            h.send_json(400, _openai_error("you must provide a model parameter"))
            return None
        problem = self._sampling_problem(body)
        if problem:
            h.send_json(400, _openai_error(problem))
            return None
        return self._chat_completion(messages, body, model)

    @staticmethod
    def _sampling_problem(body: dict[str, Any]) -> str | None:
        temperature = body.get("temperature")
        if temperature is not None and not (
            isinstance(temperature, int | float) and 0 <= temperature <= 2
        ):
            return "temperature must be a number between 0 and 2."
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and not (isinstance(max_tokens, int) and max_tokens > 0):
            return "max_tokens must be a positive integer."
        n = body.get("n")
        if n is not None and not (isinstance(n, int) and 1 <= n <= 16):
            return "n must be an integer between 1 and 16."
        return None

    # --- (b) Databricks serving endpoint -------------------------------------------------------

    def _databricks(
        self, h: Handler, request: Recorded, body: Any, name: str
    ) -> dict[str, Any] | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            h.send_json(
                401,
                {
                    "error_code": "401",
                    "message": "Credential was not sent or was of an unsupported type for "
                    "this API.",
                },
            )
            return None
        if name not in self.endpoints:
            h.send_json(
                404,
                {
                    "error_code": "RESOURCE_DOES_NOT_EXIST",
                    "message": f"The given endpoint does not exist: {name}",
                },
            )
            return None
        messages = self._chat_messages(body)
        if isinstance(messages, str):
            h.send_json(400, {"error_code": "BAD_REQUEST", "message": messages})
            return None
        problem = self._sampling_problem(body)
        if problem:
            h.send_json(400, {"error_code": "BAD_REQUEST", "message": problem})
            return None
        return self._chat_completion(messages, body, name)

    # --- (c) guardrail, (d) echo batch: DynamoEval's standard format ---------------------------

    @staticmethod
    def _standard(body: Any) -> tuple[list[list[dict[str, Any]]], int] | str:
        """The conversations and N of a standard request, or what is wrong with it."""
        if not isinstance(body, dict):
            return "body: expected an object with messages, N, seq_len and temperature"
        batch = body.get("messages")
        if not isinstance(batch, list):
            return "messages: expected a list of conversations"
        for i, conversation in enumerate(batch):
            if not isinstance(conversation, list):
                return f"messages.{i}: expected a list of messages"
            for j, m in enumerate(conversation):
                if not isinstance(m, dict) or m.get("role") not in ROLES:
                    return f"messages.{i}.{j}: expected {{role, content}}"
                if not isinstance(m.get("content"), str):
                    return f"messages.{i}.{j}.content: expected a string"
        n = body.get("N")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            return "N: expected an integer >= 1"
        seq_len = body.get("seq_len")
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            return "seq_len: expected an integer >= 1"
        temperature = body.get("temperature")
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            return "temperature: expected a number between 0 and 2"
        return batch, n

    def _guardrail(self, h: Handler, request: Recorded, body: Any) -> list[bool] | None:
        if (
            self.guardrail_token
            and request.headers.get("authorization") != f"Bearer {self.guardrail_token}"
        ):
            h.send_json(401, {"detail": "Not authenticated"})
            return None
        parsed = self._standard(body)
        if isinstance(parsed, str):
            h.send_json(422, {"detail": [{"loc": ["body"], "msg": parsed}]})
            return None
        batch, n = parsed
        word = self.flag_word.lower()
        verdicts = [any(word in m["content"].lower() for m in c) for c in batch]
        return [v for v in verdicts for _ in range(n)]

    def _echo_batch(self, h: Handler, body: Any) -> list[str] | None:
        parsed = self._standard(body)
        if isinstance(parsed, str):
            h.send_json(422, {"detail": [{"loc": ["body"], "msg": parsed}]})
            return None
        batch, n = parsed
        out: list[str] = []
        for conversation in batch:
            last = conversation[-1]["content"] if conversation else ""
            out.extend(
                f"Reply to: {last}" if i == 0 else f"Reply {i + 1} to: {last}" for i in range(n)
            )
        return out

    def _keyed(self, h: Handler, request: Recorded, body: Any) -> list[str] | None:
        expected = f"{self.api_key_prefix} {self.api_key}" if self.api_key_prefix else self.api_key
        received = request.headers.get(self.api_key_header.lower())
        if received != expected:
            h.send_json(
                401,
                {"error": f"Invalid credentials in {self.api_key_header}: {received or '(none)'}"},
            )
            return None
        return self._echo_batch(h, body)


def _with_text(reply: Any, text: str) -> Any:
    """A reply of the same shape (a list of texts, or a chat completion) with every text set."""
    if isinstance(reply, list):
        return [text if isinstance(item, str) else item for item in reply]
    if isinstance(reply, dict):
        for choice in reply.get("choices", []):
            choice["message"]["content"] = text
    return reply


_RESETTABLE = {
    "token",
    "api_key",
    "api_key_header",
    "api_key_prefix",
    "flag_word",
    "endpoints",
    "guardrail_token",
}
