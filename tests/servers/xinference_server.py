"""A protocol-faithful Xinference server (protocols.md §3) for tests.

Routes: GET /v1/cluster/auth, /v1/cluster/version; GET/POST /v1/models, GET/DELETE
/v1/models/{uid}, GET /v1/models/{uid}/progress, POST /v1/models/{uid}/cancel;
GET/POST /v1/model_registrations/LLM, GET/DELETE /v1/model_registrations/LLM/{name};
POST /v1/chat/completions and /v1/completions for a launched model, addressed by UID.

Faithful details: errors are FastAPI's `{"detail": "..."}`; registration takes `model` as a
JSON *string* and checks it like pydantic v1 + `CustomLLMFamilyV2.parse_raw` + the registry
(same messages: "1 validation error for …", "You must specify `model_family` …", "Invalid
model name X.", "Model name conflicts with existing model X", "Invalid model URI X."…); a body
whose `model` is not a string fails outside the handler's try: 500 text/plain. A custom name
registered twice answers "Model X already registered". `schema=1` emulates a server before
1.8.0: v1 JSON only (`quantizations` lists), version 2 rejected by pydantic's const check.
Launch reads `model_size_in_billions` (an unknown key such as the docs' `size_in_billions` is
kept as an engine kwarg) and needs `model_engine`; with `wait_ready=false` the model loads
for `loading_polls` describe calls (and at least `loading_seconds`), answering 503 with
`Retry-After` meanwhile — listed by GET /v1/models all along. SSE like sse-starlette:
`data: ` with a space, events ending in \\r\\n\\r\\n, `: ping - <time>` comments (`ping`),
`[DONE]` after chat streams only, `data: {"error": "<string>"}` for in-stream failures.
Chat to an unknown UID is 404, `logit_bias` 501, out-of-range parameters 500 text/plain.

Faults (`server.fault(name, **options)`): error_event(after=2, message) — an in-stream error
(non-streaming: 500 detail); cut(after=2) — the connection drops mid-stream; truncated(after=2)
— a completion stream that ends cleanly without a finish_reason; status(status, detail,
headers) — any FastAPI error on the next inference request; launch_fails(message) — the next
launch loads, then fails (describe answers 500 once, then the UID is gone).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from tests.servers.base import Fault, Handler, Recorded, TestHTTPServer

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
)

# Built-in families (a tiny excerpt of Xinference's llm_family.json), in the v2 shape.
BUILTIN_FAMILIES: tuple[dict[str, Any], ...] = (
    {
        "model_name": "qwen2.5-instruct",
        "model_lang": ["en", "zh"],
        "model_ability": ["chat", "tools"],
        "model_description": "Qwen2.5 instruction-tuned.",
        "context_length": 32768,
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_size_in_billions": "0_5",
                "quantization": "none",
                "model_id": "Qwen/Qwen2.5-0.5B-Instruct",
            },
            {
                "model_format": "pytorch",
                "model_size_in_billions": 7,
                "quantization": "none",
                "model_id": "Qwen/Qwen2.5-7B-Instruct",
            },
            {
                "model_format": "ggufv2",
                "model_size_in_billions": 7,
                "quantization": "q4_k_m",
                "model_id": "Qwen/Qwen2.5-7B-Instruct-GGUF",
                "model_file_name_template": "qwen2.5-7b-instruct-{quantization}.gguf",
            },
        ],
        "chat_template": CHATML,
        "stop_token_ids": [151643, 151644, 151645],
        "stop": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    },
    {
        "model_name": "llama-3.1-instruct",
        "model_lang": ["en", "de", "fr"],
        "model_ability": ["chat", "tools"],
        "model_description": "Llama 3.1 instruct.",
        "context_length": 131072,
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_size_in_billions": 8,
                "quantization": "none",
                "model_id": "meta-llama/Meta-Llama-3.1-8B-Instruct",
            }
        ],
        "chat_template": LLAMA3,
        "stop_token_ids": [128001, 128008, 128009],
        "stop": ["<|end_of_text|>", "<|eot_id|>", "<|eom_id|>"],
    },
    {
        "model_name": "qwen2-vl-instruct",
        "model_lang": ["en", "zh"],
        "model_ability": ["chat", "vision"],
        "model_description": "Qwen2-VL.",
        "context_length": 32768,
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_size_in_billions": 2,
                "quantization": "none",
                "model_id": "Qwen/Qwen2-VL-2B-Instruct",
            }
        ],
        "chat_template": CHATML,
        "stop_token_ids": [151645],
        "stop": ["<|im_end|>"],
    },
    {
        "model_name": "gpt-2",
        "model_lang": ["en"],
        "model_ability": ["generate"],
        "model_description": "GPT-2, a base model.",
        "context_length": 1024,
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_size_in_billions": "1_5",
                "quantization": "none",
                "model_id": "openai-community/gpt2-xl",
            }
        ],
        "chat_template": None,
        "stop_token_ids": None,
        "stop": None,
    },
)

V2_ABILITIES = (
    "embed",
    "generate",
    "chat",
    "tools",
    "vision",
    "audio",
    "omni",
    "reasoning",
    "hybrid",
)
V1_ABILITIES = ("embed", "generate", "chat", "tools", "vision", "audio")
FORMATS = ("ggufv2", "pytorch", "gptq", "awq", "fp4", "fp8", "bnb", "mlx")
ENGINES = {"transformers", "vllm", "sglang", "llama.cpp", "mlx", "lmdeploy"}
ENGINES_FOR_FORMAT = {
    "ggufv2": {"llama.cpp", "vllm"},
    "mlx": {"mlx"},
}  # anything else: transformers, vllm, sglang, lmdeploy
LAUNCH_KEYS = {
    "model_uid",
    "model_name",
    "model_engine",
    "model_type",
    "model_size_in_billions",
    "model_format",
    "quantization",
    "replica",
    "n_gpu",
    "request_limits",
    "peft_model_config",
    "worker_ip",
    "gpu_idx",
    "download_hub",
    "model_path",
}
DEFAULT_COMPLETION = " Paris is the capital of France."


def _size_key(size: Any) -> str:
    return str(size).strip()


@dataclass
class Instance:
    uid: str
    family: dict[str, Any]
    spec: dict[str, Any]
    engine: str
    loading_left: int
    ready_at: float
    polls: int = 0
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    fail: str | None = None

    @property
    def ready(self) -> bool:
        return self.loading_left <= 0 and time.monotonic() >= self.ready_at

    def description(self, address: str) -> dict[str, Any]:
        f, s = self.family, self.spec
        return {
            "model_type": "LLM",
            "address": address,
            "accelerators": ["0"],
            "model_name": f["model_name"],
            "model_lang": f.get("model_lang", []),
            "model_ability": f.get("model_ability", []),
            "model_description": f.get("model_description"),
            "model_format": s["model_format"],
            "model_size_in_billions": s["model_size_in_billions"],
            "model_family": f.get("model_family") or f["model_name"],
            "quantization": s["quantization"],
            "multimodal_projector": None,
            "model_hub": s.get("model_hub", "huggingface"),
            "revision": s.get("model_revision"),
            "context_length": f.get("context_length", 2048),
            "replica": 1,
        }


class _Handler(Handler):
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms ACK waits


class XinferenceTestServer(TestHTTPServer):
    def __init__(
        self,
        *,
        api_key: str | None = None,
        schema: int = 2,
        version: str | None = None,
        version_route: bool = True,
        auth_route: bool = True,
        builtins: tuple[dict[str, Any], ...] = BUILTIN_FAMILIES,
        loading_polls: int = 2,
        loading_seconds: float = 0.0,
        retry_after: str = "30",
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.RequestHandlerClass = _Handler
        self.api_key = api_key
        self.schema = schema
        self.version = version or ("1.7.1" if schema == 1 else "1.9.1")
        self.version_route = version_route
        self.auth_route = auth_route
        self.builtins = builtins
        self.loading_polls = loading_polls
        self.loading_seconds = loading_seconds
        self.retry_after = retry_after
        self.ping = False  # ": ping - <time>" comments between events
        self.ignore_stop = False  # completions: the engine does not honour `stop`
        self.reply: str | None = None  # chat reply; default "Echo: <last user message>"
        self.completion_reply = DEFAULT_COMPLETION
        self.remember_settings(_RESETTABLE)
        self.custom: dict[str, dict[str, Any]] = {}
        self.instances: dict[str, Instance] = {}
        self._state = threading.Lock()

    def reset(self) -> None:
        super().reset()
        with self._state:
            self.custom.clear()
            self.instances.clear()

    # --- helpers for tests ---------------------------------------------------------------------

    def launch_ready(self, name: str, uid: str | None = None, engine: str = "transformers") -> str:
        """A model that is already running (no loading phase)."""
        family = self._family(name)
        assert family is not None, name
        uid = uid or name
        with self._state:
            self.instances[uid] = Instance(
                uid, family, family["model_specs"][0], engine, 0, time.monotonic()
            )
        return uid

    # --- routing -------------------------------------------------------------------------------

    def route(self, h: Handler, request: Recorded) -> None:
        parsed = urlparse(request.path)
        path, query = parsed.path.rstrip("/"), parse_qs(parsed.query)
        method = request.method
        if path == "/v1/cluster/auth" and method == "GET":
            if not self.auth_route:
                h.send_json(404, {"detail": "Not Found"})
            else:
                h.send_json(200, {"auth": bool(self.api_key)})
            return
        if self.api_key:
            given = request.headers.get("authorization", "")
            if not given:
                h.send_json(401, {"detail": "Not authenticated"}, {"WWW-Authenticate": "Bearer"})
                return
            if given != f"Bearer {self.api_key}":
                h.send_json(
                    401,
                    {"detail": "Could not validate credentials"},
                    {"WWW-Authenticate": "Bearer"},
                )
                return
        body: Any = None
        if method in ("POST", "PUT"):
            try:
                body = json.loads(request.body or b"null")
            except ValueError as exc:
                h.send_bytes(500, f"Internal Server Error: {exc}".encode(), "text/plain")
                return
        parts = [unquote(p) for p in path.split("/")[1:]]
        if path == "/v1/cluster/version" and method == "GET" and self.version_route:
            h.send_json(
                200,
                {
                    "version": self.version,
                    "full-revisionid": "0e9e39f249a16976918f6564b8830bc894c89659",
                    "dirty": False,
                    "error": None,
                    "date": "2025-06-01T00:00:00+0000",
                },
            )
        elif path == "/v1/models" and method == "GET":
            self._list_models(h)
        elif path == "/v1/models" and method == "POST":
            self._launch(h, body, query)
        elif len(parts) == 3 and parts[:2] == ["v1", "models"]:
            if method == "GET":
                self._describe(h, parts[2])
            elif method == "DELETE":
                self._terminate(h, parts[2])
            else:
                h.send_json(405, {"detail": "Method Not Allowed"})
        elif len(parts) == 4 and parts[:2] == ["v1", "models"] and parts[3] == "progress":
            self._progress(h, parts[2])
        elif len(parts) == 4 and parts[:2] == ["v1", "models"] and parts[3] == "cancel":
            self._cancel(h, parts[2])
        elif len(parts) == 3 and parts[:2] == ["v1", "model_registrations"]:
            if method == "GET":
                self._list_registrations(h, parts[2], query)
            elif method == "POST":
                self._register(h, parts[2], body)
            else:
                h.send_json(405, {"detail": "Method Not Allowed"})
        elif len(parts) == 4 and parts[:2] == ["v1", "model_registrations"]:
            if method == "GET":
                self._get_registration(h, parts[2], parts[3])
            elif method == "DELETE":
                self._unregister(h, parts[2], parts[3])
            else:
                h.send_json(405, {"detail": "Method Not Allowed"})
        elif path == "/v1/chat/completions" and method == "POST":
            self._inference(h, body, chat=True)
        elif path == "/v1/completions" and method == "POST":
            self._inference(h, body, chat=False)
        else:
            h.send_json(404, {"detail": "Not Found"})

    # --- families ------------------------------------------------------------------------------

    def _as_schema(self, family: dict[str, Any], builtin: bool) -> dict[str, Any]:
        """A family as this server stores it: v2, or v1 with `quantizations` lists."""
        out = {"version": self.schema, **family, "is_builtin": builtin}
        if self.schema == 1:
            merged: list[dict[str, Any]] = []
            for spec in family["model_specs"]:
                key = {k: v for k, v in spec.items() if k != "quantization"}
                prev = merged[-1] if merged else None
                if prev and {k: v for k, v in prev.items() if k != "quantizations"} == key:
                    prev["quantizations"].append(spec["quantization"])
                else:
                    merged.append({**key, "quantizations": [spec["quantization"]]})
            out["model_specs"] = merged
        return out

    def _family(self, name: str) -> dict[str, Any] | None:
        for family in self.builtins:
            if family["model_name"] == name:
                return family
        return self.custom.get(name)

    def _list_registrations(self, h: Handler, model_type: str, query: dict[str, list[str]]) -> None:
        if model_type != "LLM":
            h.send_json(400, {"detail": f"Unsupported model type: {model_type}"})
            return
        detailed = query.get("detailed", ["false"])[0].lower() == "true"
        items = [(f, True) for f in self.builtins] + [(f, False) for f in self.custom.values()]
        seen: dict[str, dict[str, Any]] = {}
        for family, builtin in items:
            name = family["model_name"]
            if detailed:
                seen[name] = {
                    **self._as_schema(family, builtin),
                    "download_hubs": ["huggingface"],
                }
            else:
                seen[name] = {"model_name": name, "is_builtin": builtin}
        h.send_json(200, sorted(seen.values(), key=lambda f: f["model_name"].lower()))

    def _get_registration(self, h: Handler, model_type: str, name: str) -> None:
        family = self._family(name)
        if model_type != "LLM" or family is None:
            h.send_json(400, {"detail": f"Model {name} not found"})
            return
        h.send_json(200, self._as_schema(family, name not in self.custom))

    def _unregister(self, h: Handler, model_type: str, name: str) -> None:
        with self._state:
            if model_type != "LLM" or name not in self.custom:
                h.send_json(400, {"detail": f"Model {name} not found"})
                return
            del self.custom[name]
        h.send_json(200, None)

    def _register(self, h: Handler, model_type: str, body: Any) -> None:
        # RegisterModelRequest is parsed outside the handler's try: a bad body is a 500.
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            got = type(body.get("model")).__name__ if isinstance(body, dict) else "body"
            h.send_bytes(
                500,
                f"Internal Server Error: 1 validation error for RegisterModelRequest\nmodel\n"
                f"  str type expected (type=type_error.str; got {got})".encode(),
                "text/plain",
            )
            return
        if not isinstance(body.get("persist"), bool):
            h.send_bytes(
                500,
                b"Internal Server Error: 1 validation error for RegisterModelRequest\npersist\n"
                b"  field required (type=value_error.missing)",
                "text/plain",
            )
            return
        if model_type != "LLM":
            h.send_json(400, {"detail": f"Unsupported model type: {model_type}"})
            return
        try:
            family = self._parse_family(body["model"])
            self._add_custom(family)
        except ValueError as exc:
            h.send_json(400, {"detail": str(exc)})
            return
        h.send_json(200, None)

    def _parse_family(self, text: str) -> dict[str, Any]:
        """pydantic v1 parse_raw + CustomLLMFamilyV2.parse_raw's own checks."""
        cls = f"CustomLLMFamilyV{self.schema}"
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise ValueError(
                f"1 validation error for {cls}\n__root__\n  {exc} (type=value_error.jsondecode)"
            ) from None
        errors = _pydantic_errors(obj, self.schema)
        if errors:
            n = len(errors)
            lines = [f"{n} validation error{'s' if n > 1 else ''} for {cls}"]
            for loc, msg, kind in errors:
                lines += [loc, f"  {msg} (type={kind})"]
            raise ValueError("\n".join(lines))
        family = dict(obj)
        if family.get("model_family") is None:
            raise ValueError("You must specify `model_family` when registering custom LLM models.")
        tools = [f["model_name"] for f in self.builtins if "tools" in f["model_ability"]]
        vision = [f["model_name"] for f in self.builtins if "vision" in f["model_ability"]]
        if "tools" in family["model_ability"] and family["model_family"] not in tools:
            raise ValueError(
                "`model_family` for tool call model must be one of the following values: \n"
                + ", ".join(tools)
            )
        if "vision" in family["model_ability"] and family["model_family"] not in vision:
            raise ValueError(
                "`model_family` for multimodal model must be one of the following values: \n"
                + ", ".join(vision)
            )
        if family.get("chat_template") is None and "chat" in family["model_ability"]:
            family["chat_template"] = family["model_family"]
        styles = {f["model_name"]: f for f in self.builtins if f.get("chat_template")}
        if family.get("chat_template") in styles:
            style = styles[family["chat_template"]]
            family.update(
                stop_token_ids=style["stop_token_ids"],
                stop=style["stop"],
                chat_template=style["chat_template"],
            )
        if family["model_family"] in vision and "vision" not in family["model_ability"]:
            family["model_ability"] = [*family["model_ability"], "vision"]
        # Store as v2 (one quantization per spec), the shape launch matches against.
        specs = []
        for spec in family["model_specs"]:
            for q in spec.pop("quantizations", None) or [spec.get("quantization")]:
                specs.append({**spec, "quantization": q})
        family["model_specs"] = specs
        return family

    def _add_custom(self, family: dict[str, Any]) -> None:
        """ModelRegistry.register: the name, the URIs, then clashes."""
        name = family["model_name"]
        if not name or not re.match(r"^[^+\/?%#&=\s]*$", name):
            raise ValueError(f"Invalid model name {name}.")
        for spec in family["model_specs"]:
            uri = spec.get("model_uri")
            if uri:  # xinference/model/utils.py parse_uri + is_valid_model_uri
                parsed = urlparse(uri)
                if os.path.exists(uri):
                    scheme, path = "file", uri
                else:
                    scheme, path = parsed.scheme, parsed.netloc + parsed.path
                    scheme = "file" if len(scheme) <= 1 else scheme
                if scheme != "file":
                    continue  # other schemes pass here (and fail at launch)
                if not os.path.isabs(path):
                    raise ValueError(f"Model URI cannot be a relative path: {uri}")
                if not os.path.exists(path):
                    raise ValueError(f"Invalid model URI {uri}.")
        with self._state:
            if any(f["model_name"] == name for f in self.builtins):
                raise ValueError(f"Model name conflicts with existing model {name}")
            if name in self.custom:
                raise ValueError(f"Model {name} already registered")
            self.custom[name] = family

    # --- launch / list / describe / terminate -------------------------------------------------

    def _list_models(self, h: Handler) -> None:
        with self._state:
            data = [
                {
                    "id": uid,
                    "object": "model",
                    "created": 0,
                    "owned_by": "xinference",
                    **inst.description(f"127.0.0.1:{self.port}"),
                }
                for uid, inst in self.instances.items()
            ]
        h.send_json(200, {"object": "list", "data": data})

    def _launch(self, h: Handler, body: Any, query: dict[str, list[str]]) -> None:
        if not isinstance(body, dict) or not body.get("model_name"):
            h.send_json(400, {"detail": "Invalid input. Please specify the `model_name` field."})
            return
        name = body["model_name"]
        model_type = body.get("model_type") or "LLM"
        engine = body.get("model_engine")
        if model_type == "LLM" and not engine:
            h.send_json(400, {"detail": "Invalid input. Please specify the `model_engine` field."})
            return
        size, fmt, quant = (
            body.get("model_size_in_billions"),
            body.get("model_format"),
            body.get("quantization"),
        )
        family = self._family(name)
        specs = [
            s
            for s in (family or {}).get("model_specs", [])
            if (fmt is None or s["model_format"] == fmt)
            and (size is None or _size_key(s["model_size_in_billions"]) == _size_key(size))
            and (quant is None or s["quantization"] == quant)
        ]
        if family is None or not specs:
            h.send_json(
                400,
                {
                    "detail": f"Model not found, name: {name}, format: {fmt}, size: {size}, "
                    f"quantization: {quant}"
                },
            )
            return
        spec = specs[0]
        allowed = ENGINES_FOR_FORMAT.get(
            spec["model_format"], {"transformers", "vllm", "sglang", "lmdeploy"}
        )
        if str(engine).lower() not in ENGINES or str(engine).lower() not in allowed:
            h.send_json(400, {"detail": f"Model {name} cannot be run on engine {engine}."})
            return
        fault = self.take_fault() if self.faults and self.faults[0].name == "launch_fails" else None
        wait_ready = query.get("wait_ready", ["true"])[0].lower() != "false"
        with self._state:
            uid = body.get("model_uid") or name
            if uid in self.instances:
                if body.get("model_uid"):
                    h.send_json(400, {"detail": f"Model is already in the model list, uid: {uid}"})
                    return
                uid = f"{name}-{uuid.uuid4().hex[:8]}"
            self.instances[uid] = Instance(
                uid,
                family,
                spec,
                str(engine),
                0 if wait_ready else self.loading_polls,
                time.monotonic() + (0 if wait_ready else self.loading_seconds),
                engine_kwargs={k: v for k, v in body.items() if k not in LAUNCH_KEYS},
                fail=fault.options.get("message", "CUDA out of memory") if fault else None,
            )
        h.send_json(200, {"model_uid": uid})

    def _describe(self, h: Handler, uid: str) -> None:
        with self._state:
            inst = self.instances.get(uid)
            if inst is None:
                h.send_json(400, {"detail": f"Model not found in the model list, uid: {uid}"})
                return
            if not inst.ready:
                inst.loading_left -= 1
                inst.polls += 1
                self._loading(h, uid)
                return
            if inst.fail:
                del self.instances[uid]
                h.send_json(500, {"detail": f"Failed to launch model {uid}: {inst.fail}"})
                return
            h.send_json(200, inst.description(f"127.0.0.1:{self.port}"))

    def _loading(self, h: Handler, uid: str) -> None:
        h.send_json(
            503,
            {
                "detail": f"Model is loading, please retry later: Model {uid} is launching, "
                "not yet ready for inference"
            },
            {"Retry-After": self.retry_after},
        )

    def _progress(self, h: Handler, uid: str) -> None:
        inst = self.instances.get(uid)
        if inst is None:
            h.send_json(500, {"detail": f"Model not found in the model list, uid: {uid}"})
            return
        total = inst.polls + max(inst.loading_left, 0)
        h.send_json(200, {"progress": 1.0 if inst.ready else inst.polls / max(total, 1)})

    def _cancel(self, h: Handler, uid: str) -> None:
        with self._state:
            inst = self.instances.get(uid)
            if inst is None or inst.ready:
                h.send_json(500, {"detail": f"Model {uid} is not launching"})
                return
            del self.instances[uid]
        h.send_json(200, None)

    def _terminate(self, h: Handler, uid: str) -> None:
        with self._state:
            if uid not in self.instances:
                h.send_json(400, {"detail": f"Model not found in the model list, uid: {uid}"})
                return
            del self.instances[uid]
        h.send_json(200, None)

    # --- inference -----------------------------------------------------------------------------

    def _inference(self, h: Handler, body: Any, *, chat: bool) -> None:
        if not isinstance(body, dict):
            h.send_json(400, {"detail": "Invalid input."})
            return
        uid = str(body.get("model") or "")
        inst = self.instances.get(uid)
        if inst is None:
            h.send_json(404, {"detail": f"Model not found in the model list, uid: {uid}"})
            return
        if not inst.ready or inst.fail:
            self._loading(h, uid)
            return
        if body.get("logit_bias") is not None:
            h.send_json(501, {"detail": "Not implemented"})
            return
        problem = _param_problem(body)
        if problem:
            h.send_bytes(500, f"Internal Server Error: {problem}".encode(), "text/plain")
            return
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                h.send_json(400, {"detail": "Invalid input. Please specify the prompt."})
                return
            if "chat" not in inst.family.get("model_ability", []):
                h.send_json(400, {"detail": f"Model {inst.family['model_name']} is not for chat."})
                return
            last = next(
                (m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), ""
            )
            text = self.reply if self.reply is not None else f"Echo: {last}"
            prompt = " ".join(str(m.get("content", "")) for m in messages)
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                h.send_json(400, {"detail": "Invalid input. Please specify the prompt."})
                return
            text = self.completion_reply
        fault = self.take_fault()
        if fault and fault.name == "status":
            o = fault.options
            h.send_json(o.get("status", 500), {"detail": o.get("detail", "boom")}, o.get("headers"))
            return
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        tokens, finish = _tokens(text, body.get("max_tokens"), [] if self.ignore_stop else stops)
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(tokens),
            "total_tokens": len(prompt.split()) + len(tokens),
        }
        if body.get("stream"):
            self._stream(h, body, inst, tokens, finish, usage, fault, chat=chat)
            return
        if fault and fault.name == "error_event":
            h.send_json(500, {"detail": fault.options.get("message", "CUDA out of memory")})
            return
        reply = "".join(tokens)
        base = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4()}",
            "created": int(time.time()),
        }
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": finish,
            }
            payload = {"object": "chat.completion", "model": uid, **base, "choices": [choice]}
        else:
            choice = {"index": 0, "text": reply, "logprobs": None, "finish_reason": finish}
            payload = {"object": "text_completion", "model": uid, **base, "choices": [choice]}
        h.send_json(200, {**payload, "usage": usage})

    def _stream(
        self,
        h: Handler,
        body: dict[str, Any],
        inst: Instance,
        tokens: list[str],
        finish: str,
        usage: dict[str, int],
        fault: Fault | None,
        *,
        chat: bool,
    ) -> None:
        base = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4()}",
            "model": inst.uid,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
        }
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def event(data: Any) -> bytes:
            text = data if isinstance(data, str) else json.dumps(data)
            ping = f": ping - {datetime.now(UTC)}\r\n\r\n" if self.ping else ""
            return f"{ping}data: {text}\r\n\r\n".encode()

        def chunk(piece: str | None, reason: str | None, role: bool = False) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {"role": "assistant"} if role else {}
                delta["content"] = piece or ""
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": reason}
            else:
                choice = {
                    "index": 0,
                    "text": piece or "",
                    "logprobs": None,
                    "finish_reason": reason,
                }
            return {**base, "choices": [choice]}

        h.start_chunked()
        after = fault.options.get("after", 2) if fault else -1
        if chat:
            h.write_chunk(event(chunk("", None, role=True)))
        for i, token in enumerate(tokens):
            if fault and i == after:
                error = event({"error": fault.options.get("message", "CUDA out of memory")})
                if h.stream_fault(fault, error):
                    return
            h.write_chunk(event(chunk(token, None)))
        last = chunk("", finish)
        if include_usage and not chat:
            last["usage"] = usage
        h.write_chunk(event(last))
        if chat:
            if include_usage:
                h.write_chunk(event({**base, "choices": [], "usage": usage}))
            h.write_chunk(event("[DONE]"))
        h.end_chunked()  # no [DONE] after a /v1/completions stream


def _tokens(text: str, max_tokens: Any, stops: list[str]) -> tuple[list[str], str]:
    finish = "stop"
    for stop in stops:
        if stop and stop in text:
            text = text[: text.index(stop)]
    tokens = re.findall(r"\s*\S+", text) or ([text] if text else [])
    if isinstance(max_tokens, int) and len(tokens) > max_tokens:
        tokens, finish = tokens[:max_tokens], "length"
    return tokens, finish


def _param_problem(body: dict[str, Any]) -> str | None:
    """Out-of-range values fail pydantic in parse_obj, outside the try: a 500 (§3.5)."""
    checks = [
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("top_k", 0, None),
        ("repetition_penalty", 0, None),
        ("max_tokens", 1, None),
    ]
    for name, low, high in checks:
        value = body.get(name)
        if value is None:
            continue
        if value < low:
            return (
                f"1 validation error for CreateCompletion\n{name}\n  ensure this value is "
                f"greater than or equal to {low} (type=value_error.number.not_ge; limit_value={low})"
            )
        if high is not None and value > high:
            return (
                f"1 validation error for CreateCompletion\n{name}\n  ensure this value is less "
                f"than or equal to {high} (type=value_error.number.not_le; limit_value={high})"
            )
    return None


def _pydantic_errors(obj: Any, schema: int) -> list[tuple[str, str, str]]:
    """The errors pydantic v1 reports for LLMFamilyV{schema}, in its order and words."""
    if not isinstance(obj, dict):
        return [("__root__", "value is not a valid dict", "type_error.dict")]
    errors: list[tuple[str, str, str]] = []

    def missing(loc: str) -> None:
        errors.append((loc, "field required", "value_error.missing"))

    version = obj.get("version")
    if version is None:
        missing("version")
    elif version != schema:
        errors.append(
            (
                "version",
                f"unexpected value; permitted: {schema}",
                f"value_error.const; given={version}; permitted=({schema},)",
            )
        )
    ctx = obj.get("context_length")
    if ctx is not None and not isinstance(ctx, int):
        errors.append(("context_length", "value is not a valid integer", "type_error.integer"))
    if not isinstance(obj.get("model_name"), str):
        missing("model_name") if "model_name" not in obj else errors.append(
            ("model_name", "str type expected", "type_error.str")
        )
    if not isinstance(obj.get("model_lang"), list):
        missing("model_lang")
    abilities = obj.get("model_ability")
    allowed = V2_ABILITIES if schema == 2 else V1_ABILITIES
    if not isinstance(abilities, list):
        missing("model_ability")
    else:
        for i, ability in enumerate(abilities):
            if ability not in allowed:
                permitted = ", ".join(f"'{a}'" for a in allowed)
                errors.append(
                    (
                        f"model_ability -> {i}",
                        f"unexpected value; permitted: {permitted}",
                        "value_error.const",
                    )
                )
    specs = obj.get("model_specs")
    if not isinstance(specs, list):
        missing("model_specs")
        return errors
    for i, spec in enumerate(specs):
        loc = f"model_specs -> {i}"
        if not isinstance(spec, dict):
            errors.append((loc, "value is not a valid dict", "type_error.dict"))
            continue
        fmt = spec.get("model_format")
        if fmt is None:
            errors.append(
                (
                    loc,
                    "Discriminator 'model_format' is missing in value",
                    "value_error.discriminated_union.missing_discriminator",
                )
            )
            continue
        if fmt not in FORMATS:
            allowed_formats = ", ".join(f"'{f}'" for f in FORMATS)
            errors.append(
                (
                    loc,
                    f"No match for discriminator 'model_format' and value '{fmt}' "
                    f"(allowed values: {allowed_formats})",
                    "value_error.discriminated_union.invalid_discriminator",
                )
            )
            continue
        if "model_size_in_billions" not in spec:
            missing(f"{loc} -> model_size_in_billions")
        if schema == 2:
            if "quantization" not in spec:
                missing(f"{loc} -> quantization")
            elif not isinstance(spec["quantization"], str):
                errors.append((f"{loc} -> quantization", "str type expected", "type_error.str"))
        elif not isinstance(spec.get("quantizations"), list):
            missing(f"{loc} -> quantizations")
        if fmt == "ggufv2" and "model_file_name_template" not in spec:
            missing(f"{loc} -> model_file_name_template")
    return errors


_RESETTABLE = {
    "api_key",
    "schema",
    "version",
    "version_route",
    "auth_route",
    "builtins",
    "loading_polls",
    "loading_seconds",
    "retry_after",
    "ping",
    "ignore_stop",
    "reply",
    "completion_reply",
}
