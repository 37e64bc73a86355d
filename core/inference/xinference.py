"""Xinference (xorbitsai/inference): chat with a running model by its UID, and manage models.

Wire format: protocols.md §3. Three parts, each usable from a page without Streamlit:

* `XinferenceAdapter` — the adapter contract. The base URL is the server root
  (http://host:9997); the card's remote model is the running model's UID. The model is
  described once per adapter (GET /v1/models/{uid}): a model with the `chat` ability goes
  through /v1/chat/completions (delegated to `OpenAICompatAdapter`: that route is
  OpenAI-compatible), a generate-only one through /v1/completions with a prompt built by the
  card's chat template (core.inference.prompts, default "plain"). Xinference's stream quirks
  are handled: `{"error": "<string>"}` events, `: ping` comments, events ending in \\r\\n\\r\\n,
  and no `[DONE]` on /v1/completions (the last chunk's finish_reason ends the reply).
* `XinferenceServer` — the admin client: auth check, running models, registrations,
  register / unregister, launch (with `model_size_in_billions`, not the docs' `size_in_billions`
  pitfall), wait until ready (503 + Retry-After while loading), cancel, terminate.
* `CustomLLM` / `CustomLLMSpec` — the Register-custom-model form as dataclasses, with
  `to_v2()` / `to_v1()`, `parse_spec()` for pasted JSON of either version and
  `validate_spec()` with Xinference's own rules in plain words.

Choices where Xinference leaves room:

* Schema version (v2 since Xinference 1.8.0; v1 before). `XinferenceServer.schema_version()`
  asks GET /v1/cluster/version first (admin-only when auth is on), then reads the `version`
  field of a built-in model's registration (GET /v1/model_registrations/LLM/{name}, open to
  any key that may list models). When neither answers, `register()` sends v2 and, if the
  server rejects it with pydantic's "version … permitted: 1", sends v1 once and remembers it.
  `to_v1()` carries both `chat_template` (read by 0.15–1.7) and `prompt_style` (read by
  ≤0.14, only for a built-in style name); each server ignores the key it does not know.
* A model listed by GET /v1/models is not necessarily ready: while it loads, describe and
  chat answer 503 with `Retry-After: 30`. The adapter describes first and reports "still
  loading" at once (`ModelLoading`) instead of sleeping through the retries; the chat route's
  retries wait at most 10 s for a Retry-After.
* Rules that need the server's built-in families (tools, vision, a chat template named after
  a family, name clashes) are checked only when `validate_spec()` gets `KnownFamilies`
  (from `XinferenceServer.known_families()`); `spec_notes()` says what is left to the server.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote, urlparse, urlsplit, urlunsplit

import httpx
from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from core.inference import checks, prompts
from core.inference.http import (
    NO_RETRY,
    HttpEndpoint,
    RetryPolicy,
    is_event_stream,
    iter_sse,
    parse_json,
    server_message,
    stream_error,
    transport_error,
)
from core.inference.openai_compat import OpenAICompatAdapter, usage_of
from core.inference.registry import KindSpec
from core.inference.target import Auth, Target
from core.inference.types import (
    AuthFailed,
    BadRequest,
    BadResponse,
    ConnectionReport,
    Finish,
    GenerationParams,
    InferenceError,
    Message,
    NotFound,
    Reply,
    RequestTimedOut,
    ServerError,
    StreamEvent,
    StreamInterrupted,
    TextDelta,
    finish_reason,
)
from core.params import (
    COMMON_PARAMS,
    FREQUENCY_PENALTY,
    PRESENCE_PENALTY,
    REPETITION_PENALTY,
    TOP_K,
)
from core.secrets import scrub

DEFAULT_PORT = 9997
SCHEMA_VERSIONS = (1, 2)
ABILITIES = ("generate", "chat", "embed", "tools", "vision", "audio", "omni", "reasoning", "hybrid")
V1_ABILITIES = ("embed", "generate", "chat", "tools", "vision", "audio")
FORM_ABILITIES = ("generate", "chat", "embed", "tools", "vision")  # what the form offers
MODEL_FORMATS = ("pytorch", "gptq", "awq", "fp4", "fp8", "bnb", "ggufv2", "mlx")
MODEL_HUBS = ("huggingface", "modelscope", "openmind_hub", "csghub")
ENGINES = ("Transformers", "vLLM", "SGLang", "llama.cpp", "MLX", "LMDEPLOY")
ENGINES_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "ggufv2": ("llama.cpp", "vLLM"),
    "mlx": ("MLX",),
}  # every other format: Transformers, vLLM, SGLang, LMDEPLOY


def engines_for(model_format: str) -> tuple[str, ...]:
    """The engines that can run a format, for the launch form's choice."""
    return ENGINES_BY_FORMAT.get(model_format, ("Transformers", "vLLM", "SGLang", "LMDEPLOY"))


NAME_PATTERN = re.compile(r"^[^+\/?%#&=\s]*$")  # xinference/model/utils.py is_valid_model_name
ENDPOINTS = ("auto", "chat", "generate")
CHAT_RETRY_WAIT = 10.0  # longest Retry-After the chat route waits for; loading takes minutes

# --- errors -----------------------------------------------------------------------------------


class ModelLoading(ServerError):
    """The model UID exists but is still loading (503 + Retry-After)."""

    def __init__(self, uid: str, *, retry_after: float | None = None, detail: str = "") -> None:
        wait = f" (it suggests trying again in {retry_after:g} s)" if retry_after else ""
        super().__init__(
            f"'{uid}' is still loading on the Xinference server{wait}. "
            "Send again when it is ready; launching a large model can take minutes.",
            status=503,
            detail=detail,
            retry_after=retry_after,
        )
        self.uid = uid


class ModelNotRunning(NotFound):
    """No running model has this UID (never launched, terminated, or its launch failed)."""

    def __init__(self, uid: str, running: list[str] | None = None, *, detail: str = "") -> None:
        if running:
            listed = f" Running now: {', '.join(running[:10])}."
        elif running is not None:
            listed = " No model is running there: launch one first."
        else:
            listed = ""
        super().__init__(
            f"'{uid}' is not running on the Xinference server.{listed} "
            "Use the UID of a running model (Launch gives it).",
            status=404,
            detail=detail,
        )
        self.uid = uid
        self.running = running or []


class SpecInvalid(BadRequest):
    """A custom model definition that breaks Xinference's rules; `errors` is {field: message}."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(
            "Fix the custom model before registering it: " + " ".join(errors.values()),
            detail=json.dumps(errors, indent=1),
        )
        self.errors = errors


class LaunchFailed(ServerError):
    """The server accepted a launch, then the model never became ready."""


class LaunchTimedOut(RequestTimedOut):
    """The model was still loading when `wait_until_ready` gave up."""


# --- custom model definitions -----------------------------------------------------------------


def size_to_wire(size: int | float | str) -> int | str:
    """Xinference's form of a size in billions: 7 -> 7, 0.5 -> "0_5", "1_8" stays "1_8"."""
    if isinstance(size, str):
        text = size.strip()
        if "_" in text:
            return text
        try:
            return int(text)
        except ValueError:
            pass
        try:
            size = float(text)
        except ValueError:
            return text  # not a size: validate_spec says so
    if isinstance(size, float):
        return int(size) if size.is_integer() else str(size).replace(".", "_")
    return int(size)


def size_value(size: Any) -> float | None:
    """The number behind a size ("0_5" -> 0.5), or None when it is not one."""
    if isinstance(size, bool):
        return None
    if isinstance(size, int | float):
        return float(size)
    if isinstance(size, str):
        text = size.strip().replace("_", ".", 1)
        try:
            return float(text)
        except ValueError:
            return None
    return None


def size_label(size: Any) -> str:
    value = size_value(size)
    return f"{value:g}B" if value is not None else str(size or "?")


@dataclass
class CustomLLMSpec:
    """One way to get the weights: format, size, quantization(s) and where they are.

    Several quantizations make one v1 spec (`quantizations` list) or several v2 specs.
    """

    model_format: str = "pytorch"
    size_in_billions: int | float | str = 7
    quantizations: list[str] = field(default_factory=lambda: ["none"])
    model_id: str = ""  # on the hub, e.g. Qwen/Qwen2.5-7B-Instruct
    model_uri: str = ""  # on the Xinference server's disk: file:///models/x or /models/x
    model_hub: str = "huggingface"
    model_file_name_template: str = ""  # ggufv2 only, e.g. qwen2.5-7b-{quantization}.gguf
    model_revision: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # pasted keys we do not model

    def _common(self) -> dict[str, Any]:
        return {
            "model_format": self.model_format,
            "model_size_in_billions": size_to_wire(self.size_in_billions),
        }

    def _where(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_id": self.model_id.strip() or None,
            "model_hub": self.model_hub or "huggingface",
            "model_uri": self.model_uri.strip() or None,
            "model_revision": self.model_revision.strip() or None,
        }
        if self.model_format == "ggufv2" and self.model_file_name_template.strip():
            out["model_file_name_template"] = self.model_file_name_template.strip()
        return out

    def to_v2(self) -> list[dict[str, Any]]:
        """One v2 spec per quantization (v2 has a single `quantization` string per spec)."""
        return [
            {**self._common(), "quantization": q, **self._where(), **self.extra}
            for q in self.quantizations
        ]

    def to_v1(self) -> dict[str, Any]:
        return {
            **self._common(),
            "quantizations": list(self.quantizations),
            **self._where(),
            **self.extra,
        }


_FAMILY_KEYS = {
    "version",
    "model_name",
    "model_family",
    "model_lang",
    "model_ability",
    "model_description",
    "context_length",
    "model_specs",
    "chat_template",
    "prompt_style",
    "stop",
    "stop_token_ids",
    "is_builtin",
}
_SPEC_KEYS = {
    "model_format",
    "model_size_in_billions",
    "quantization",
    "quantizations",
    "model_id",
    "model_uri",
    "model_hub",
    "model_file_name_template",
    "model_revision",
}


@dataclass
class CustomLLM:
    """The Register-custom-model form. `chat_template` is Jinja source, or the name of a
    built-in model family whose template to use (Xinference copies it in)."""

    name: str = ""
    family: str = ""
    languages: list[str] = field(default_factory=lambda: ["en"])
    abilities: list[str] = field(default_factory=lambda: ["generate"])
    description: str = ""
    context_length: int | None = 2048
    specs: list[CustomLLMSpec] = field(default_factory=lambda: [CustomLLMSpec()])
    chat_template: str = ""
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # pasted keys we do not model

    def _top(self, version: int) -> dict[str, Any]:
        out: dict[str, Any] = {"version": version}
        if self.context_length is not None:
            out["context_length"] = self.context_length
        out.update(
            model_name=self.name.strip(),
            model_lang=list(self.languages),
            model_ability=list(self.abilities),
            model_description=self.description.strip() or None,
            model_family=self.family.strip() or None,
        )
        return out

    def _chat(self) -> dict[str, Any]:
        return {
            "chat_template": self.chat_template or None,
            "stop_token_ids": list(self.stop_token_ids) or None,
            "stop": list(self.stop) or None,
        }

    def to_v2(self) -> dict[str, Any]:
        """The current schema (Xinference ≥ 1.8.0)."""
        return {
            **self._top(2),
            "model_specs": [s for spec in self.specs for s in spec.to_v2()],
            **self._chat(),
            **self.extra,
        }

    def to_v1(self) -> dict[str, Any]:
        """The older schema (≤ 1.7.x): `quantizations` lists; `prompt_style` for ≤ 0.14."""
        style = (
            self.chat_template if self.chat_template and not _is_jinja(self.chat_template) else None
        )
        return {
            **self._top(1),
            "model_specs": [spec.to_v1() for spec in self.specs],
            **self._chat(),
            "prompt_style": style,
            **self.extra,
        }

    def to_dict(self, version: int = 2) -> dict[str, Any]:
        return self.to_v1() if version == 1 else self.to_v2()

    def to_json(self, version: int = 2) -> str:
        """What goes in the registration's `model` field (a JSON string)."""
        return json.dumps(self.to_dict(version))


def _is_jinja(text: str) -> bool:
    return "{{" in text or "{%" in text


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def parse_spec(pasted: str | Mapping[str, Any]) -> CustomLLM:
    """A pasted custom-model JSON (version 1 or 2, or a whole registration body) as a form.

    v2 specs that differ only by quantization become one spec with several quantizations.
    Raises `SpecInvalid` with the key "json" when the text is not such a definition.
    """
    data: Any = pasted
    if isinstance(pasted, str):
        try:
            data = json.loads(pasted)
        except RecursionError:
            raise SpecInvalid({"json": "This JSON is nested too deeply to read."}) from None
        except ValueError as exc:
            raise SpecInvalid({"json": f"This is not valid JSON: {exc}."}) from None
    if (
        isinstance(data, Mapping)
        and isinstance(data.get("model"), str)
        and "model_name" not in data
    ):
        return parse_spec(data["model"])  # the registration body, with the definition inside
    if not isinstance(data, Mapping):
        raise SpecInvalid({"json": "The JSON must be an object with model_name, model_specs…"})
    if not isinstance(data.get("model_specs", []), list):
        raise SpecInvalid({"json": "model_specs must be a list of specs."})
    version = data.get("version")
    if version not in (*SCHEMA_VERSIONS, None):
        raise SpecInvalid({"json": f"Unknown schema version {version!r}: Xinference has 1 and 2."})

    specs: list[CustomLLMSpec] = []
    for raw in data.get("model_specs") or []:
        if not isinstance(raw, Mapping):
            raise SpecInvalid({"json": "Each entry of model_specs must be an object."})
        quants = _texts(raw["quantizations"] if "quantizations" in raw else raw.get("quantization"))
        spec = CustomLLMSpec(
            model_format=str(raw.get("model_format") or ""),
            size_in_billions=raw.get("model_size_in_billions", ""),
            quantizations=quants,
            model_id=str(raw.get("model_id") or ""),
            model_uri=str(raw.get("model_uri") or ""),
            model_hub=str(raw.get("model_hub") or "huggingface"),
            model_file_name_template=str(raw.get("model_file_name_template") or ""),
            model_revision=str(raw.get("model_revision") or ""),
            extra={k: v for k, v in raw.items() if k not in _SPEC_KEYS},
        )
        previous = specs[-1] if specs else None
        if previous and replace(previous, quantizations=[]) == replace(spec, quantizations=[]):
            previous.quantizations += [q for q in quants if q not in previous.quantizations]
        else:
            specs.append(spec)

    template = data.get("chat_template")
    style = data.get("prompt_style")
    stop, stop_ids = data.get("stop"), data.get("stop_token_ids")
    if not template and style:  # ≤ 0.14: a style name, or an object naming one
        if isinstance(style, Mapping):
            template = style.get("style_name")
            stop = stop or style.get("stop")
            stop_ids = stop_ids or style.get("stop_token_ids")
        else:
            template = style
    return CustomLLM(
        name=str(data.get("model_name") or ""),
        family=str(data.get("model_family") or ""),
        languages=_texts(data.get("model_lang")),
        abilities=_texts(data.get("model_ability")),
        description=str(data.get("model_description") or ""),
        context_length=data.get("context_length", 2048),
        specs=specs,
        chat_template=str(template or ""),
        stop=_texts(stop),
        stop_token_ids=[i for i in stop_ids if isinstance(i, int)]
        if isinstance(stop_ids, list)
        else [],
        extra={k: v for k, v in data.items() if k not in _FAMILY_KEYS},
    )


@dataclass(frozen=True)
class KnownFamilies:
    """What the server already has, for the checks only it can make (from the registrations)."""

    names: frozenset[str] = frozenset()  # every built-in and registered model name
    builtin: frozenset[str] = frozenset()
    tools: frozenset[str] = frozenset()  # built-in families that can call tools
    vision: frozenset[str] = frozenset()
    chat_templates: frozenset[str] = frozenset()  # built-in families with a chat template

    @classmethod
    def from_registrations(cls, families: list[dict[str, Any]]) -> KnownFamilies:
        """From GET /v1/model_registrations/LLM?detailed=true."""
        names: set[str] = set()
        builtin: set[str] = set()
        tools: set[str] = set()
        vision: set[str] = set()
        templates: set[str] = set()
        for family in families:
            name = str(family.get("model_name") or "")
            if not name:
                continue
            names.add(name)
            if not family.get("is_builtin"):
                continue
            builtin.add(name)
            abilities = family.get("model_ability") or []
            if "tools" in abilities:
                tools.add(name)
            if "vision" in abilities:
                vision.add(name)
            if family.get("chat_template") or family.get("prompt_style"):
                templates.add(name)
        return cls(
            frozenset(names),
            frozenset(builtin),
            frozenset(tools),
            frozenset(vision),
            frozenset(templates),
        )


@lru_cache(maxsize=1)
def _jinja() -> ImmutableSandboxedEnvironment:
    # Hugging Face chat templates may use {% break %} / {% continue %}.
    return ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])


def _check_uri(uri: str) -> str | None:
    """Xinference's is_valid_model_uri, as far as it can be checked away from the server."""
    if re.match(r"^[A-Za-z]:[\\/]", uri):  # a Windows path: scheme of one letter = file
        return None
    try:
        parsed = urlparse(uri)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        return f"This is not a valid model URI ({exc}): {uri}"
    if parsed.scheme in ("", "file"):
        path = parsed.netloc + parsed.path if parsed.scheme == "file" else uri
        if not path.startswith("/"):
            return (
                f"Model URI cannot be a relative path: {uri}. Use an absolute path on the "
                "Xinference server, e.g. file:///models/my-model or /models/my-model."
            )
        return None
    return (
        f"Xinference loads a model URI from its own disk: use file:///absolute/path or "
        f"/absolute/path, not {parsed.scheme}://. For a hub model, fill in the model ID instead."
    )


def validate_spec(model: CustomLLM, known: KnownFamilies | None = None) -> dict[str, str]:
    """Every problem Xinference would refuse the definition for, keyed by form field.

    Keys: name, languages, abilities, family, chat_template, context_length, specs and
    specs.<i>.<field>. Rules needing the server's families run only with `known`.
    """
    errors: dict[str, str] = {}
    name = model.name.strip()
    if not name:
        errors["name"] = "Give the model a name."
    elif not NAME_PATTERN.match(name):
        errors["name"] = (
            f"Invalid model name '{name}': it cannot contain spaces or any of + / ? % # & =."
        )
    elif known and name in known.names:
        errors["name"] = (
            f"The server already has a model named '{name}' "
            f"({'built-in' if name in known.builtin else 'registered'}): pick another name."
        )
    if any(not isinstance(lang, str) or not lang.strip() for lang in model.languages):
        errors["languages"] = "A language is a code such as en or zh; remove the empty entry."
    unknown = [a for a in model.abilities if a not in ABILITIES]
    if unknown:
        errors["abilities"] = (
            f"Unknown ability '{unknown[0]}': Xinference knows {', '.join(ABILITIES)}."
        )
    elif not model.abilities:
        errors["abilities"] = "Choose at least one ability: generate, chat or embed."
    family = model.family.strip()
    if not family:
        errors["family"] = (
            "Xinference requires a model family for custom models: the built-in family the "
            "model is based on (e.g. qwen2.5-instruct), or a name of your own."
        )
    elif known:
        for ability, allowed, what in (
            ("tools", known.tools, "Tool calling"),
            ("vision", known.vision, "Vision"),
        ):
            if ability in model.abilities and family not in allowed:
                options = ", ".join(sorted(allowed)[:12]) or "none on this server"
                errors["family"] = (
                    f"{what} needs a built-in family that supports it, not '{family}'. "
                    f"This server has: {options}."
                )
                break
    problem = _check_template(model, known)
    if problem:
        errors["chat_template"] = problem
    ctx = model.context_length
    if ctx is not None and (isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 1):
        errors["context_length"] = "The context length is a whole number of tokens, 1 or more."
    if not model.specs:
        errors["specs"] = "Add at least one model spec: its format, size and where the weights are."
    for i, spec in enumerate(model.specs):
        errors.update({f"specs.{i}.{k}": v for k, v in _check_one_spec(spec).items()})
    return errors


def _check_template(model: CustomLLM, known: KnownFamilies | None) -> str | None:
    template = model.chat_template.strip()
    if not template:
        if "chat" in model.abilities and known and model.family.strip() not in known.chat_templates:
            return (
                "A chat model needs a chat template: paste a Jinja template, or name a "
                "built-in family whose template to use."
            )
        return None
    if _is_jinja(template):
        try:
            _jinja().parse(template)
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            return f"Template syntax error{f' on line {line}' if line else ''}: {exc}."
        except RecursionError:  # Jinja's parser recurses once per nested bracket or block
            return "The template nests brackets or blocks too deeply to be read."
        return None
    if any(ch.isspace() for ch in template):
        return "This is neither a Jinja template ({{ … }}) nor a built-in family name."
    if known and template not in known.chat_templates:
        return (
            f"'{template}' is not a built-in family with a chat template on this server: "
            "paste a Jinja template instead."
        )
    return None


def _check_one_spec(spec: CustomLLMSpec) -> dict[str, str]:
    errors: dict[str, str] = {}
    if spec.model_format not in MODEL_FORMATS:
        errors["model_format"] = (
            f"Unknown format '{spec.model_format}': use one of {', '.join(MODEL_FORMATS)}."
        )
    value = size_value(spec.size_in_billions)
    if value is None or value <= 0:
        errors["size_in_billions"] = (
            "The size in billions of parameters must be a positive number, e.g. 7 or 0.5."
        )
    if not spec.quantizations or any(not str(q).strip() for q in spec.quantizations):
        errors["quantizations"] = 'Give the quantization: "none" for unquantized weights.'
    if not spec.model_id.strip() and not spec.model_uri.strip():
        errors["model_id"] = (
            "Give the model ID on the hub (e.g. Qwen/Qwen2.5-7B-Instruct) or a model URI "
            "(a path on the Xinference server)."
        )
    if spec.model_uri.strip():
        problem = _check_uri(spec.model_uri.strip())
        if problem:
            errors["model_uri"] = problem
    if spec.model_hub not in MODEL_HUBS:
        errors["model_hub"] = f"Unknown hub '{spec.model_hub}': use one of {', '.join(MODEL_HUBS)}."
    if spec.model_format == "ggufv2":
        template = spec.model_file_name_template.strip()
        if not template:
            errors["model_file_name_template"] = (
                "A GGUF spec needs the file name template, e.g. my-model-{quantization}.gguf."
            )
        elif len(spec.quantizations) > 1 and "{quantization}" not in template:
            errors["model_file_name_template"] = (
                "With several quantizations the file name template must contain "
                "{quantization}, or every quantization would load the same file."
            )
    return errors


def spec_notes(model: CustomLLM, known: KnownFamilies | None = None) -> list[str]:
    """What only the server can check, in plain words (for a caption under the form)."""
    notes = []
    if any(s.model_uri.strip() for s in model.specs):
        notes.append("The server checks that each model URI exists on its own disk.")
    if known is None:
        notes.append(
            "Name clashes with built-in models, tool and vision families and built-in "
            "template names are checked by the server when you register."
        )
        if "chat" in model.abilities and not model.chat_template.strip():
            notes.append(
                f"No chat template: the server uses the template of the family "
                f"'{model.family.strip() or '?'}', which must then be a built-in family."
            )
    return notes


# --- what the server reports ------------------------------------------------------------------


@dataclass(frozen=True)
class RunningModel:
    """A model instance: GET /v1/models (listed, maybe still loading) or /v1/models/{uid}."""

    uid: str
    name: str
    model_type: str = "LLM"
    abilities: tuple[str, ...] = ()
    model_format: str = ""
    size_in_billions: int | str | None = None
    quantization: str = ""
    context_length: int | None = None
    family: str = ""
    description: str = ""
    languages: tuple[str, ...] = ()
    replica: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_payload(cls, uid: str, data: Mapping[str, Any]) -> RunningModel:
        size = data.get("model_size_in_billions")
        ctx = data.get("context_length")
        replica = data.get("replica")
        return cls(
            uid=uid,
            name=str(data.get("model_name") or uid),
            model_type=str(data.get("model_type") or "LLM"),
            abilities=tuple(_texts(data.get("model_ability"))),  # a bare 5 or "chat" too
            model_format=str(data.get("model_format") or ""),
            size_in_billions=size if isinstance(size, int | str) else None,
            quantization=str(data.get("quantization") or ""),
            context_length=ctx if isinstance(ctx, int) else None,
            family=str(data.get("model_family") or ""),
            description=str(data.get("model_description") or ""),
            languages=tuple(_texts(data.get("model_lang"))),
            replica=replica if isinstance(replica, int) else None,
            raw=dict(data),
        )

    @property
    def can_chat(self) -> bool:
        return "chat" in self.abilities

    @property
    def can_generate(self) -> bool:
        return "generate" in self.abilities

    @property
    def summary(self) -> str:
        """'qwen2.5-instruct, pytorch 7B none, chat + tools, 32768-token context'."""
        parts = [self.name]
        shape = " ".join(
            p
            for p in (
                self.model_format,
                size_label(self.size_in_billions) if self.size_in_billions else "",
                self.quantization,
            )
            if p
        )
        if shape:
            parts.append(shape)
        if self.abilities:
            parts.append(" + ".join(self.abilities))
        if self.context_length:
            parts.append(f"{self.context_length}-token context")
        return ", ".join(parts)


@dataclass(frozen=True)
class RegisteredModel:
    """One entry of GET /v1/model_registrations/{type}; the details only with detailed=True."""

    name: str
    is_builtin: bool
    abilities: tuple[str, ...] = ()
    family: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class LaunchProgress:
    """One poll while a launched model loads: what a page shows under "Launching…"."""

    uid: str
    elapsed: float  # seconds since wait_until_ready started
    polls: int  # describe calls answered "still loading" so far
    retry_after: float | None  # what the server suggested
    progress: float | None  # 0..1 from /v1/models/{uid}/progress, when the server has it
    message: str  # the server's words, e.g. "Model is loading, please retry later: …"


# --- shared helpers ---------------------------------------------------------------------------

_SUFFIXES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1")


def normalise_root(url: str) -> str:
    """The server root: a pasted …/v1 or …/v1/chat/completions is trimmed (from the path
    only, so a host named v1 stays; idempotent)."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    while path.endswith(_SUFFIXES):
        path = path[: -len(next(s for s in _SUFFIXES if path.endswith(s)))].rstrip("/")
    return urlunsplit(parts._replace(path=path))


def server_said(err: InferenceError) -> str:
    """What the server's error body said (FastAPI's detail), on one line."""
    _, _, body = err.detail.partition("\n")
    said = server_message(body) if body else ""
    segments: list[str] = []
    for line in said.splitlines():  # pydantic: "loc\n  message" -> "loc: message"
        if line.startswith("  ") and segments:
            segments[-1] += ": " + line.strip()
        elif line.strip():
            segments.append(line.strip())
    text = "; ".join(segments)
    return text if not text or text[-1] in ".!?)" else text + "."


def _as(err: InferenceError, message: str) -> InferenceError:
    """The same kind of error with a message that says what we were doing."""
    new = type(err)(message, status=err.status, detail=err.detail, retry_after=err.retry_after)
    return new


def _not_found_uid(err: InferenceError) -> bool:
    """Xinference's "Model not found in the model list, uid: X" (400 before 2.7.0, then 404);
    a bare 404 "Not Found" is a missing route instead (a wrong base URL)."""
    said = server_said(err).lower()
    if err.status == 400:
        return "not found in the model list" in said
    return err.status == 404 and "model" in said


# --- the admin client -------------------------------------------------------------------------


class XinferenceServer:
    """Manage an Xinference server: what runs, what is registered, launch and stop.

    Build it from a card's `Target` (same URL and key) or from a URL and an API key. Every
    method returns dataclasses or plain values and raises `InferenceError` subclasses whose
    message is one plain sentence with the server's own words kept.
    """

    def __init__(
        self,
        target: Target | str,
        client: httpx.Client | None = None,
        *,
        api_key: str | None = None,
    ) -> None:
        if isinstance(target, str):
            auth = Auth("bearer", api_key) if api_key else Auth()
            target = Target(kind="xinference", base_url=target, auth=auth)
        self.target = target
        self.root = normalise_root(target.base_url)
        self.http = HttpEndpoint.for_target(target, client, self.root)
        self._schema: int | None = None
        self._no_progress = False

    # --- plumbing -----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Any | None = None,
        *,
        action: str,
        retry: RetryPolicy | None = NO_RETRY,
    ) -> Any:
        try:
            with self.http.stream(method, path, body, retry=retry) as response:
                raw = response.read()
        except InferenceError as err:
            raise self._explain(err, action) from None
        if not raw.strip():
            return None
        return parse_json(raw, f"{self.root}/{path}", self.http.secrets)

    def _explain(self, err: InferenceError, action: str) -> InferenceError:
        if err.status is None or isinstance(err, ModelLoading | ModelNotRunning):
            return err
        said = server_said(err)
        if err.status in (401, 403):
            what = "rejected the API key" if err.status == 401 else "refused access"
            return _as(
                err,
                f"{action}: the Xinference server {what} ({err.status})"
                f"{': ' + said if said else '.'} Check the API key (Bearer) of the connection.",
            )
        if err.status == 404 and said in ("", "Not Found."):
            return _as(
                err,
                f"{action}: the server has no such route (404). Is {self.root} an Xinference "
                "server (the root address, without /v1), and recent enough?",
            )
        return _as(err, f"{action} ({err.status}){': ' + said if said else '.'}")

    # --- the cluster --------------------------------------------------------------------------

    def auth_required(self) -> bool:
        """GET /v1/cluster/auth; an older server without the route has no authentication."""
        try:
            data = self._call("GET", "v1/cluster/auth", action="Checking authentication")
        except NotFound:
            return False
        if not isinstance(data, dict) or "auth" not in data:
            raise BadResponse(
                '/v1/cluster/auth did not answer {"auth": …}: is this an Xinference server?',
                detail=scrub(json.dumps(data)[:500], self.http.secrets),
            )
        return bool(data["auth"])

    def version(self) -> str | None:
        """The server's version, or None when it will not say (admin-only with auth)."""
        try:
            data = self._call("GET", "v1/cluster/version", action="Reading the version")
        except (NotFound, AuthFailed, BadRequest, BadResponse, ServerError):
            return None
        version = data.get("version") if isinstance(data, dict) else None
        return str(version) if version else None

    def schema_version(self) -> int | None:
        """2 or 1 for the custom-model JSON this server takes; None when it cannot be told.

        From the version (≥ 1.8.0 takes v2), else from a built-in registration's `version`.
        """
        if self._schema is None:
            self._schema = _schema_from_version(self.version()) or self._schema_from_registrations()
        return self._schema

    def _schema_from_registrations(self) -> int | None:
        try:
            builtin = next((m for m in self.registered_models() if m.is_builtin), None)
            if builtin is None:
                return None
            data = self.registration(builtin.name)
        except (NotFound, AuthFailed, BadRequest, BadResponse, ServerError):
            return None
        version = data.get("version") if isinstance(data, dict) else None
        return version if version in SCHEMA_VERSIONS else None

    # --- running models -----------------------------------------------------------------------

    def running_models(self, *, retry: RetryPolicy | None = None) -> list[RunningModel]:
        """GET /v1/models: every launched model, including ones still loading."""
        data = self._call("GET", "v1/models", action="Listing the running models", retry=retry)
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            items = [
                (str(m.get("id")), m) for m in data["data"] if isinstance(m, dict) and m.get("id")
            ]
        elif isinstance(data, dict):  # older servers: {uid: description}
            items = [(str(uid), m) for uid, m in data.items() if isinstance(m, dict)]
        else:
            raise BadResponse(
                "The model list did not have Xinference's shape ({'data': [...]}).",
                detail=scrub(json.dumps(data)[:2000], self.http.secrets),
            )
        return [RunningModel.from_payload(uid, m) for uid, m in items]

    def running_uids(self) -> list[str]:
        return [m.uid for m in self.running_models(retry=NO_RETRY)]

    def describe(self, uid: str) -> RunningModel:
        """GET /v1/models/{uid}. Raises ModelLoading (503) or ModelNotRunning.

        A refused or timed-out connection is retried like any request; a 503 is not, since
        it means the model is loading and the caller waits for that with its own progress."""
        try:
            path = f"v1/models/{quote(uid, safe='')}"
            connect_only = replace(self.http.retry, retry_statuses=False)
            with self.http.stream("GET", path, retry=connect_only) as r:
                raw = r.read()
        except ServerError as err:
            if err.status == 503:
                raise ModelLoading(uid, retry_after=err.retry_after, detail=err.detail) from None
            raise self._explain(err, f"Describing '{uid}'") from None
        except InferenceError as err:
            if _not_found_uid(err):
                raise ModelNotRunning(uid, self.running_uids_or_none(), detail=err.detail) from None
            raise self._explain(err, f"Describing '{uid}'") from None
        data = parse_json(raw, f"{self.root}/v1/models/{uid}", self.http.secrets)
        if not isinstance(data, dict):
            raise BadResponse(
                f"The description of '{uid}' is not a JSON object.",
                detail=scrub(json.dumps(data)[:2000], self.http.secrets),
            )
        return RunningModel.from_payload(uid, data)

    def running_uids_or_none(self) -> list[str] | None:
        try:
            return self.running_uids()
        except InferenceError:
            return None

    def launch_progress(self, uid: str) -> float | None:
        """0..1 from GET /v1/models/{uid}/progress; None when the server does not say."""
        if self._no_progress:
            return None
        try:
            data = self._call("GET", f"v1/models/{quote(uid, safe='')}/progress", action="Progress")
        except NotFound:
            self._no_progress = True  # an older server: don't ask again
            return None
        except InferenceError:
            return None
        value = data.get("progress") if isinstance(data, dict) else None
        return float(value) if isinstance(value, int | float) else None

    def launch(
        self,
        name: str,
        engine: str,
        size_in_billions: int | float | str | None = None,
        model_format: str | None = None,
        quantization: str | None = None,
        uid: str | None = None,
        extra: Mapping[str, Any] | None = None,
        *,
        model_type: str = "LLM",
    ) -> str:
        """POST /v1/models?wait_ready=false; returns the model UID at once (it then loads:
        follow it with `wait_until_ready`). `extra` keys go to the engine (n_gpu, replica,
        gpu_memory_utilization…)."""
        body: dict[str, Any] = {
            "model_uid": uid or None,
            "model_name": name,
            "model_type": model_type,
            "model_engine": engine or None,
        }
        if size_in_billions is not None and size_in_billions != "":
            if size_value(size_in_billions) is None:
                raise BadRequest(
                    f"The size must be a number of billions of parameters, e.g. 7 or 0.5 "
                    f"(got {size_in_billions!r})."
                )
            body["model_size_in_billions"] = size_to_wire(size_in_billions)
        if model_format:
            body["model_format"] = model_format
        if quantization:
            body["quantization"] = quantization
        body.update(extra or {})
        data = self._call(
            "POST",
            "v1/models?wait_ready=false",
            body,
            action=f"Xinference could not launch '{name}'",
        )
        launched = data.get("model_uid") if isinstance(data, dict) else None
        if not launched:
            raise BadResponse(
                "The launch answer had no model_uid.",
                detail=scrub(json.dumps(data)[:2000], self.http.secrets),
            )
        return str(launched)

    def wait_until_ready(
        self,
        uid: str,
        timeout: float = 600.0,
        on_progress: Callable[[LaunchProgress], None] | None = None,
        *,
        min_wait: float = 0.5,
        max_wait: float = 10.0,
    ) -> RunningModel:
        """Poll describe while the server answers 503, honouring its Retry-After between
        `min_wait` and `max_wait` seconds, for at most `timeout` seconds."""
        start = time.monotonic()
        polls = 0
        while True:
            try:
                return self.describe(uid)
            except ModelLoading as loading:
                polls += 1
                elapsed = time.monotonic() - start
                if on_progress:
                    on_progress(
                        LaunchProgress(
                            uid,
                            elapsed,
                            polls,
                            loading.retry_after,
                            self.launch_progress(uid),
                            server_said(loading),
                        )
                    )
                remaining = timeout - elapsed
                if remaining <= 0:
                    raise LaunchTimedOut(
                        f"'{uid}' was still loading after {timeout:g} s. It may still come up: "
                        "check the running models again later, or read the server's log.",
                        detail=loading.detail,
                    ) from None
                wait = loading.retry_after if loading.retry_after is not None else min_wait
                time.sleep(min(max(wait, min_wait), max_wait, remaining))
            except ModelNotRunning as gone:
                raise LaunchFailed(
                    f"The launch of '{uid}' failed: the server no longer lists it. Its log "
                    "says why (out of memory, missing weights, wrong engine…).",
                    status=gone.status,
                    detail=gone.detail,
                ) from None
            except ServerError as err:
                raise LaunchFailed(
                    f"The launch of '{uid}' failed ({err.status}): "
                    f"{server_said(err) or err.message}",
                    status=err.status,
                    detail=err.detail,
                ) from None

    def cancel_launch(self, uid: str) -> None:
        """POST /v1/models/{uid}/cancel: stop a launch that is still loading."""
        self._call(
            "POST",
            f"v1/models/{quote(uid, safe='')}/cancel",
            action=f"Xinference could not cancel the launch of '{uid}'",
        )

    def terminate(self, uid: str) -> None:
        """DELETE /v1/models/{uid}: stop a running model and free its memory."""
        try:
            self._call(
                "DELETE",
                f"v1/models/{quote(uid, safe='')}",
                action=f"Xinference could not stop '{uid}'",
            )
        except InferenceError as err:
            if _not_found_uid(err):
                raise ModelNotRunning(uid, self.running_uids_or_none(), detail=err.detail) from None
            raise

    # --- registrations ------------------------------------------------------------------------

    def registered_models(
        self, model_type: str = "LLM", detailed: bool = False
    ) -> list[RegisteredModel]:
        """GET /v1/model_registrations/{type}: built-in and custom models that can be launched."""
        data = self._call(
            "GET",
            f"v1/model_registrations/{quote(model_type, safe='')}?detailed={str(detailed).lower()}",
            action="Listing the registered models",
        )
        if not isinstance(data, list):
            raise BadResponse(
                "The registrations list is not a JSON list.",
                detail=scrub(json.dumps(data)[:2000], self.http.secrets),
            )
        return [
            RegisteredModel(
                name=str(item.get("model_name")),
                is_builtin=bool(item.get("is_builtin")),
                abilities=tuple(str(a) for a in item.get("model_ability") or ()),
                family=str(item.get("model_family") or ""),
                raw=dict(item) if detailed else {},
            )
            for item in data
            if isinstance(item, dict) and item.get("model_name")
        ]

    def registration(self, name: str, model_type: str = "LLM") -> dict[str, Any]:
        """GET /v1/model_registrations/{type}/{name}: the full definition."""
        data = self._call(
            "GET",
            f"v1/model_registrations/{quote(model_type, safe='')}/{quote(name, safe='')}",
            action=f"Reading the registration of '{name}'",
        )
        if not isinstance(data, dict):
            raise BadResponse(f"The registration of '{name}' is not a JSON object.")
        return data

    def known_families(self) -> KnownFamilies:
        """What `validate_spec` needs for the server-side rules (one detailed listing)."""
        models = self.registered_models(detailed=True)
        return KnownFamilies.from_registrations([{**m.raw, "model_name": m.name} for m in models])

    def register(
        self,
        model: CustomLLM | Mapping[str, Any] | str,
        persist: bool = False,
        *,
        schema: int | None = None,
        known: KnownFamilies | None = None,
    ) -> int:
        """Validate, then POST /v1/model_registrations/LLM with `model` as a JSON string.

        `model` is the form, or pasted JSON (either version, converted as needed). Returns
        the schema version sent. See the module docstring for how the version is chosen.
        """
        form = model if isinstance(model, CustomLLM) else parse_spec(model)
        problems = validate_spec(form, known)
        if problems:
            raise SpecInvalid(problems)
        version = schema or self.schema_version()
        try:
            self._register(form, persist, version or 2)
        except BadRequest as err:
            permitted = _permitted_version(err)
            if schema or permitted is None or permitted == (version or 2):
                raise
            self._register(form, persist, permitted)
            version = permitted
        self._schema = version or 2
        return self._schema

    def _register(self, form: CustomLLM, persist: bool, version: int) -> None:
        body = {"model": form.to_json(version), "worker_ip": None, "persist": persist}
        self._call(
            "POST",
            "v1/model_registrations/LLM",
            body,
            action=f"Xinference could not register '{form.name.strip()}'",
        )

    def unregister(self, name: str, model_type: str = "LLM") -> None:
        """DELETE /v1/model_registrations/{type}/{name} (custom models only)."""
        self._call(
            "DELETE",
            f"v1/model_registrations/{quote(model_type, safe='')}/{quote(name, safe='')}",
            action=f"Xinference could not unregister '{name}'",
        )


def _schema_from_version(version: str | None) -> int | None:
    match = re.match(r"^v?(\d+)\.(\d+)", version or "")
    if not match:
        return None
    return 2 if (int(match.group(1)), int(match.group(2))) >= (1, 8) else 1


def _permitted_version(err: InferenceError) -> int | None:
    """The schema version a server asks for when it rejects ours (pydantic's const error)."""
    said = server_said(err)
    match = re.search(r"version: unexpected value; permitted: (\d)", said)
    return int(match.group(1)) if match and int(match.group(1)) in SCHEMA_VERSIONS else None


# --- the kind's spec ----------------------------------------------------------------------------


def validate_settings(settings: Mapping[str, Any]) -> dict[str, str]:
    """The card's settings beyond the chat template (KindSpec.settings_rules)."""
    endpoint = settings.get("endpoint", "auto")
    if endpoint not in ENDPOINTS:
        return {"settings.endpoint": f"Endpoint must be auto, chat or generate (got {endpoint!r})."}
    return {}


SPEC = KindSpec(
    kind="xinference",
    label="Xinference",
    description="A model running on an Xinference server (xorbitsai/inference), addressed by "
    "its model UID. Chat models answer through /v1/chat/completions; generate-only models "
    "through /v1/completions, with the conversation turned into one prompt by the chat "
    "template you choose. Custom models can be registered, launched and stopped from Plugboard.",
    adapter="core.inference.xinference:XinferenceAdapter",
    params=(*COMMON_PARAMS, TOP_K, REPETITION_PENALTY, PRESENCE_PENALTY, FREQUENCY_PENALTY),
    url_placeholder=f"http://localhost:{DEFAULT_PORT}",
    url_help="The server's root address (default port 9997), without /v1. Requests go to "
    "{URL}/v1/chat/completions, or {URL}/v1/completions for generate-only models.",
    model_label="Model UID",
    model_placeholder="qwen2.5-instruct",
    model_help="The UID of a running model: Launch gives it (by default the model's name). "
    "Test connection lists the running UIDs.",
    default_auth="none",
    auth_types=("none", "bearer"),
    lists_models=True,
    settings_defaults={"chat_template": "plain", "endpoint": "auto"},
    settings_rules=validate_settings,
)


# --- the adapter ------------------------------------------------------------------------------

Mode = Literal["chat", "generate"]


class XinferenceAdapter:
    def __init__(self, target: Target, client: httpx.Client | None = None) -> None:
        self.target = target
        self.server = XinferenceServer(target, client)
        self.http = self.server.http
        self.chat_api = OpenAICompatAdapter(
            replace(
                target,
                base_url=self.server.root + "/v1",
                max_retry_wait=min(target.max_retry_wait, CHAT_RETRY_WAIT),
            ),
            client,
        )
        self._model: RunningModel | None = None
        self._mode: Mode | None = None

    @property
    def uid(self) -> str:
        return self.target.model.strip()

    # --- which route --------------------------------------------------------------------------

    def describe(self) -> RunningModel:
        """The card's model, described once per adapter (not cached while it loads)."""
        if self._model is None:
            if not self.uid:
                raise BadRequest("Enter the UID of a running model (the card's model name).")
            self._model = self.server.describe(self.uid)
        return self._model

    def mode(self) -> Mode:
        """chat or generate: the card's `endpoint` setting, else the model's abilities."""
        if self._mode is None:
            self._mode = self._choose_mode()
        return self._mode

    def _choose_mode(self) -> Mode:
        endpoint = self.target.settings.get("endpoint") or "auto"
        if endpoint in ("chat", "generate"):
            return "chat" if endpoint == "chat" else "generate"
        try:
            model = self.describe()
        except AuthFailed as err:
            if err.status == 403:  # a key that may chat but not describe: assume chat
                return "chat"
            raise
        if model.can_chat:
            return "chat"
        if model.can_generate or not model.abilities:
            return "generate"
        raise BadRequest(
            f"'{self.uid}' cannot write text: its abilities are {', '.join(model.abilities)}. "
            "Pick the UID of a chat or generate model."
        )

    def _explain(self, err: InferenceError) -> InferenceError:
        """Xinference's model errors in its own terms (the generic 404 hint is about /v1)."""
        if isinstance(err, ModelLoading | ModelNotRunning):
            return err
        if err.status == 503 and "loading" in server_said(err).lower():
            return ModelLoading(self.uid, retry_after=err.retry_after, detail=err.detail)
        if err.status is not None and _not_found_uid(err):
            self._model = None
            return ModelNotRunning(self.uid, self.server.running_uids_or_none(), detail=err.detail)
        if err.status == 501:
            return _as(
                err,
                f"Xinference does not support a parameter that was sent (501)"
                f"{': ' + server_said(err) if server_said(err) else '.'} "
                "Remove it (logit_bias, for example) and try again.",
            )
        return err

    # --- the adapter contract -----------------------------------------------------------------

    def stream_chat(
        self, messages: list[Message], params: GenerationParams
    ) -> Generator[StreamEvent, None, None]:
        try:
            if self.mode() == "chat":
                yield from self.chat_api.stream_chat(messages, params)
            else:
                yield from self._stream_generate(messages, params)
        except InferenceError as err:
            raise self._explain(err) from None

    def chat(self, messages: list[Message], params: GenerationParams) -> Reply:
        try:
            if self.mode() == "chat":
                return self.chat_api.chat(messages, params)
            return self._generate(messages, params)
        except InferenceError as err:
            raise self._explain(err) from None

    def list_remote_models(self) -> list[str]:
        """The UIDs of the running LLMs (embedding, image… models cannot chat)."""
        return [m.uid for m in self.server.running_models() if m.model_type in ("LLM", "")]

    # --- /v1/completions ------------------------------------------------------------------------

    def template(self) -> prompts.ChatTemplate:
        return prompts.resolve(self.target.settings, default="plain")

    def completion_body(
        self, messages: list[Message], params: GenerationParams, stream: bool
    ) -> dict[str, Any]:
        template = self.template()
        body: dict[str, Any] = {
            "model": self.uid,
            # The engine's tokenizer adds BOS itself.
            "prompt": prompts.render(template, messages, include_bos=False),
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        values = params.to_dict()
        stops = [*values.pop("stop", []), *template.stop]
        if stops:  # the template's end-of-turn markers end the reply too
            body["stop"] = list(dict.fromkeys(stops))
        body.update(values)
        return body

    def _stream_generate(
        self, messages: list[Message], params: GenerationParams
    ) -> Generator[StreamEvent, None, None]:
        shown = prompts.StopFilter(self.template().stop)
        response = self.http.send(
            "POST", "v1/completions", self.completion_body(messages, params, True)
        )
        try:
            if not is_event_stream(response):
                data = parse_json(response.read(), str(response.request.url), self.http.secrets)
                reply = self._parse_completion(data, shown)
                yield from OpenAICompatAdapter._reply_events(reply)
                return
            yield from self._read_completion_stream(response, shown)
        except httpx.TransportError as exc:
            raise transport_error(exc, str(response.request.url), self.http.timeouts) from None
        finally:
            response.close()

    def _read_completion_stream(
        self, response: httpx.Response, shown: prompts.StopFilter
    ) -> Generator[StreamEvent, None, None]:
        """text_completion chunks; Xinference sends no [DONE] here, so the finish_reason (or
        a [DONE] from a newer server) marks a complete reply."""
        url = str(response.request.url)
        secrets = self.http.secrets
        finish: str | None = None
        for event in iter_sse(response):
            data = event.data
            if not data:
                continue
            if data.startswith("[DONE]"):
                finish = finish or "stop"
                break
            try:
                chunk = json.loads(data)
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
            if chunk.get("error"):
                raise stream_error(chunk, url=url, secrets=secrets)
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                text = choice.get("text")
                if isinstance(text, str) and text and (out := shown.feed(text)):
                    yield TextDelta(out)
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
            usage = usage_of(chunk.get("usage"))
            if usage and (usage.prompt_tokens is not None or usage.completion_tokens is not None):
                yield usage
        if rest := shown.flush():
            yield TextDelta(rest)
        if finish is None:
            raise StreamInterrupted(
                "The reply stopped before the server said it was finished (no finish_reason "
                "in the last chunk). What arrived is kept.",
                detail=f"completion stream from {url} ended without a finish_reason",
            )
        yield Finish("stop" if shown.stopped else finish)

    def _generate(self, messages: list[Message], params: GenerationParams) -> Reply:
        shown = prompts.StopFilter(self.template().stop)
        response = self.http.send(
            "POST", "v1/completions", self.completion_body(messages, params, False)
        )
        try:
            data = parse_json(response.read(), str(response.request.url), self.http.secrets)
        except httpx.TransportError as exc:
            raise transport_error(exc, str(response.request.url), self.http.timeouts) from None
        finally:
            response.close()
        return self._parse_completion(data, shown)

    def _parse_completion(self, data: Any, shown: prompts.StopFilter) -> Reply:
        try:
            choice = data["choices"][0]
            text = choice["text"]
        except (KeyError, IndexError, TypeError):
            raise BadResponse(
                "The reply did not have the shape of a text completion (no choices[0].text).",
                detail=scrub(json.dumps(data)[:2000], self.http.secrets),
            ) from None
        if not isinstance(text, str):
            raise BadResponse("The completion's text is not text.")
        kept = shown.apply(text)
        reason = "stop" if shown.stopped else finish_reason(choice.get("finish_reason"))
        return Reply(kept, reason, usage_of(data.get("usage")))

    # --- connection test ----------------------------------------------------------------------

    def test_connection(self) -> ConnectionReport:
        """DNS, Connection, Authentication (/v1/cluster/auth), Model (running? loading?) and a
        one-token Chat request: the first layer that fails is named."""
        report = ConnectionReport()
        if not checks.resolve(self.server.root, report):
            return report
        try:
            needs_key = self.server.auth_required()
        except Exception as exc:  # noqa: BLE001 — every failure becomes a report line
            failure = checks.classify(exc)
            layer = failure.layer if failure.layer in ("Connection", "TLS") else "Connection"
            return report.failed(layer, failure.message)
        report.info["auth"] = needs_key
        report.passed("Connection", "The Xinference server answers.")
        has_key = bool(self.target.auth.secret) and self.target.auth.type != "none"
        if needs_key and not has_key:
            return report.failed(
                "Authentication",
                "This Xinference server requires an API key: choose Bearer auth and enter it.",
            )
        try:
            running = self.server.running_models(retry=NO_RETRY)
        except Exception as exc:  # noqa: BLE001
            failure = checks.classify(exc)
            if failure.layer == "Authentication":
                return report.failed("Authentication", str(exc))
            return report.failed("Model", f"Could not list the running models: {exc}")
        if needs_key:
            report.passed("Authentication", "The server accepted the API key.")
        else:
            report.passed(
                "Authentication",
                "The server does not check API keys"
                + ("; the key you entered is not needed." if has_key else "."),
            )
        report.remote_models = [m.uid for m in running if m.model_type in ("LLM", "")]
        if not self.uid:
            listed = ", ".join(report.remote_models[:10]) or "none (launch one first)"
            return report.failed("Model", f"Enter the UID of a running model. Running: {listed}.")
        try:
            model = self.describe()
            mode = self.mode()
        except (ModelLoading, ModelNotRunning, BadRequest) as exc:
            return report.failed("Model", exc.message)
        except Exception as exc:  # noqa: BLE001
            return report.failed(checks.classify(exc).layer, str(exc))
        report.info["model"] = model.raw
        route = "/v1/chat/completions" if mode == "chat" else "/v1/completions"
        report.passed("Model", f"'{self.uid}' is running: {model.summary}. Replies use {route}.")
        try:
            reply = self.chat(
                [Message("user", "Say hi.")], GenerationParams(max_tokens=1, temperature=0)
            )
        except Exception as exc:  # noqa: BLE001
            return report.failed("Chat request", str(exc))
        report.passed(
            "Chat request",
            f"'{self.uid}' answered through {route} ({reply.finish_reason or 'done'}): "
            f"{reply.text[:60]!r}.",
        )
        return report
