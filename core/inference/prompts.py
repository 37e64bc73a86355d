"""Chat templates: turn a conversation into one prompt for completion-only endpoints.

Templates are Jinja2 in the Hugging Face style (`messages`, `add_generation_prompt`,
`bos_token`, `eos_token`, `raise_exception`), rendered in a sandbox, so a template copied
from a model's tokenizer_config.json works as a custom template too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NoReturn

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from core.inference.types import ConfigurationError, Message


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    label: str
    source: str
    stop: tuple[str, ...] = ()
    bos_token: str = ""
    eos_token: str = ""


PLAIN_SYSTEM = (
    "The following is a conversation between a user and a helpful, knowledgeable assistant. "
    "The assistant answers clearly and briefly."
)

# One worked example teaches a base model (no chat tuning) the turn format and tone.
_PLAIN = """\
{{ default_system }}
{% for m in messages if m.role == 'system' %}
{{ m.content }}
{% endfor %}

User: What is the capital of France?
Assistant: The capital of France is Paris.
{% for m in messages if m.role != 'system' %}
{{ 'User' if m.role == 'user' else 'Assistant' }}: {{ m.content }}
{% endfor %}
{% if add_generation_prompt %}Assistant:{% endif %}"""

_CHATML = """\
{% for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

_LLAMA2 = """\
{% set ns = namespace(system='') %}
{% for m in messages if m.role == 'system' %}{% set ns.system = m.content %}{% endfor %}
{% set turns = messages | rejectattr('role', 'equalto', 'system') | list %}
{% for m in turns %}
{% if m.role == 'user' %}{{ bos_token }}[INST] {% if loop.first and ns.system %}<<SYS>>
{{ ns.system }}
<</SYS>>

{% endif %}{{ m.content }} [/INST]{% else %} {{ m.content }} {{ eos_token }}{% endif %}
{% endfor %}"""

_LLAMA3 = """\
{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>

{{ m.content }}<|eot_id|>{% endfor %}
{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""

_MISTRAL = """\
{% set ns = namespace(system='') %}
{% for m in messages if m.role == 'system' %}{% set ns.system = m.content %}{% endfor %}
{{ bos_token }}{% for m in messages if m.role != 'system' %}
{% if m.role == 'user' %}[INST] {% if loop.last and ns.system %}{{ ns.system }}

{% endif %}{{ m.content }} [/INST]{% else %}{{ m.content }}{{ eos_token }}{% endif %}
{% endfor %}"""

_GEMMA = """\
{% set ns = namespace(system='') %}
{% for m in messages if m.role == 'system' %}{% set ns.system = m.content %}{% endfor %}
{{ bos_token }}{% for m in messages if m.role != 'system' %}
<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}
{% if loop.first and ns.system %}{{ ns.system }}

{% endif %}{{ m.content }}<end_of_turn>
{% endfor %}
{% if add_generation_prompt %}<start_of_turn>model
{% endif %}"""

_ZEPHYR = """\
{% for m in messages %}<|{{ m.role }}|>
{{ m.content }}{{ eos_token }}
{% endfor %}
{% if add_generation_prompt %}<|assistant|>
{% endif %}"""

BUILTIN_TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        ChatTemplate("plain", "Plain dialogue (User: / Assistant:)", _PLAIN, ("\nUser:", "User:")),
        ChatTemplate("chatml", "ChatML (Qwen, Yi, Hermes…)", _CHATML, ("<|im_end|>",)),
        ChatTemplate("llama2", "Llama 2 chat", _LLAMA2, ("</s>",), "<s>", "</s>"),
        ChatTemplate("llama3", "Llama 3", _LLAMA3, ("<|eot_id|>",), "<|begin_of_text|>"),
        ChatTemplate("mistral", "Mistral instruct", _MISTRAL, ("</s>",), "<s>", "</s>"),
        ChatTemplate("gemma", "Gemma", _GEMMA, ("<end_of_turn>",), "<bos>"),
        ChatTemplate("zephyr", "Zephyr", _ZEPHYR, ("</s>",), "", "</s>"),
    )
}

EXAMPLE_CONVERSATION = [
    Message("system", "You are a helpful assistant."),
    Message("user", "Hello! Who are you?"),
    Message("assistant", "I am an assistant. How can I help?"),
    Message("user", "Tell me a joke."),
]


def _raise(message: str) -> NoReturn:
    raise TemplateError(message)


@lru_cache(maxsize=1)
def _env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env


@lru_cache(maxsize=64)
def _compile(source: str) -> Any:
    return _env().from_string(source)


def render(
    template: ChatTemplate,
    messages: list[Message],
    *,
    add_generation_prompt: bool = True,
    include_bos: bool = True,
) -> str:
    """The prompt for `messages`. `include_bos=False` when the tokenizer adds BOS itself."""
    try:
        return str(
            _compile(template.source).render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=template.bos_token if include_bos else "",
                eos_token=template.eos_token,
                default_system=PLAIN_SYSTEM,
            )
        )
    except Exception as exc:  # noqa: BLE001 — any template failure is the template's fault
        raise ConfigurationError(
            f"The chat template '{template.label}' failed: {exc}",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None


def check_template(source: str) -> str | None:
    """None if `source` compiles and renders the example conversation, else what is wrong."""
    if not source.strip():
        return "The template is empty."
    try:
        _env().parse(source)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        return f"Template syntax error{f' on line {line}' if line else ''}: {exc}"
    except RecursionError:  # Jinja's parser recurses once per nested bracket or block
        return "The template nests brackets or blocks too deeply to be read."
    try:
        prompt = render(ChatTemplate("custom", "custom", source), EXAMPLE_CONVERSATION)
    except ConfigurationError as exc:
        return exc.message
    if "Tell me a joke." not in prompt:
        return "The template does not include the messages' content (use {{ m.content }})."
    return None


def resolve(settings: dict[str, Any], default: str = "plain") -> ChatTemplate:
    """The template a card's settings choose: a built-in name, or custom Jinja source."""
    name = settings.get("chat_template") or default
    if not isinstance(name, str):
        raise ConfigurationError(f"The chat template setting is not a template name: {name!r}.")
    if name == "custom":
        source = settings.get("custom_template") or ""
        stops = settings.get("template_stop") or []
        if not isinstance(source, str) or not (
            isinstance(stops, list | tuple) and all(isinstance(s, str) for s in stops)
        ):
            raise ConfigurationError(
                "The custom chat template must be text and its stop sequences a list of texts."
            )
        return ChatTemplate("custom", "Custom template", source, tuple(s for s in stops if s))
    try:
        return BUILTIN_TEMPLATES[name]
    except KeyError:
        raise ConfigurationError(f"Unknown chat template '{name}'.") from None


class StopFilter:
    """Cuts a streamed reply at the first stop sequence, dropping the sequence itself.

    Text that could be the start of a stop sequence is held back until it is clear it is
    not. Servers that keep stop sequences in their output (TGI) would otherwise show the
    template's end-of-turn markers ("\\nUser:") at the end of every reply.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped or not self.stops:
            return "" if self.stopped else text
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i != -1]
        if hits:
            out, self.pending, self.stopped = self.pending[: min(hits)], "", True
            return out
        keep = max((self._overlap(s) for s in self.stops), default=0)
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def _overlap(self, stop: str) -> int:
        """Length of the longest end of `pending` that begins `stop`."""
        for size in range(min(len(stop) - 1, len(self.pending)), 0, -1):
            if self.pending.endswith(stop[:size]):
                return size
        return 0

    def flush(self, *, drop_partial: bool = True) -> str:
        """What is held back at the end. A reply cut by max tokens halfway through a stop
        marker ("\nUser") ends there, so a held-back start of a marker is dropped too."""
        held = "" if self.stopped else self.pending
        if (
            drop_partial
            and held
            and any(s.startswith(held.lstrip(" ")) or s.startswith(held) for s in self.stops)
        ):
            held = ""
        self.pending = ""
        return held

    def apply(self, text: str) -> str:
        """The whole-text version, for replies that did not stream."""
        return self.feed(text) + self.flush()
