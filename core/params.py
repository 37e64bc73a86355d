"""Generation parameters: what each one means, its range, and validation with plain messages.

A connection kind lists the parameters it accepts (see `KindSpec.params`); the Sandbox draws
its controls from the same specs, and the catalog validates a card's defaults with them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

ParamType = Literal["float", "int", "bool", "text_list"]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    label: str
    type: ParamType
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_min: bool = False
    exclusive_max: bool = False
    default: Any = None
    max_items: int | None = None  # text lists
    advanced: bool = True  # shown under "More settings"

    def range_text(self) -> str:
        if self.minimum is None and self.maximum is None:
            return ""
        lo = (
            "" if self.minimum is None else f"{'>' if self.exclusive_min else '≥'} {self.minimum:g}"
        )
        hi = (
            "" if self.maximum is None else f"{'<' if self.exclusive_max else '≤'} {self.maximum:g}"
        )
        return " and ".join(p for p in (lo, hi) if p)

    def check(self, value: Any) -> str | None:
        """None when fine, else a sentence saying what is wrong."""
        if value is None:
            return None
        if self.type == "bool":
            return None if isinstance(value, bool) else f"{self.label} must be on or off."
        if self.type == "text_list":
            return self._check_list(value)
        return self._check_number(value)

    def _check_list(self, value: Any) -> str | None:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            return f"{self.label} must be a list of texts."
        if any(v == "" for v in value):
            return f"{self.label} cannot contain an empty entry."
        if self.max_items is not None and len(value) > self.max_items:
            return f"{self.label} allows at most {self.max_items} entries (got {len(value)})."
        return None

    def _check_number(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{self.label} must be a number."
        if self.type == "int" and not isinstance(value, int):  # 256.0 stays a float in JSON
            return f"{self.label} must be a whole number."
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.label} must be a finite number."
        too_low = self.minimum is not None and (
            value <= self.minimum if self.exclusive_min else value < self.minimum
        )
        too_high = self.maximum is not None and (
            value >= self.maximum if self.exclusive_max else value > self.maximum
        )
        if too_low or too_high:
            try:
                got = f"{value:g}"
            except OverflowError:  # a whole number beyond any float
                got = "a number far too large"
            return f"{self.label} must be {self.range_text()} (got {got})."
        return None


TEMPERATURE = ParamSpec(
    "temperature",
    "Temperature",
    "float",
    "Higher is more varied, lower is more focused. 0 picks the likeliest word every time.",
    minimum=0,
    maximum=2,
    default=0.7,
    advanced=False,
)
MAX_TOKENS = ParamSpec(
    "max_tokens",
    "Max tokens",
    "int",
    "The longest reply, in tokens (about ¾ of a word each).",
    minimum=1,
    maximum=1_000_000,
    default=512,
    advanced=False,
)
TOP_P = ParamSpec(
    "top_p",
    "Top P",
    "float",
    "Sample only from the most likely words whose probabilities add up to this.",
    minimum=0,
    maximum=1,
    default=1.0,
)
STOP = ParamSpec(
    "stop",
    "Stop sequences",
    "text_list",
    "The reply ends when the model writes one of these. One per line, up to 4.",
    max_items=4,
)
SEED = ParamSpec(
    "seed",
    "Seed",
    "int",
    "The same seed with the same settings gives the same reply, where the server supports it.",
    minimum=0,
    maximum=2**53 - 1,  # the largest whole number a browser can hold exactly
)
PRESENCE_PENALTY = ParamSpec(
    "presence_penalty",
    "Presence penalty",
    "float",
    "Positive values push the model towards new topics.",
    minimum=-2,
    maximum=2,
)
FREQUENCY_PENALTY = ParamSpec(
    "frequency_penalty",
    "Frequency penalty",
    "float",
    "Positive values make the model repeat itself less.",
    minimum=-2,
    maximum=2,
)
TOP_K = ParamSpec(
    "top_k",
    "Top K",
    "int",
    "Sample only from the K most likely next tokens.",
    minimum=1,
    maximum=100_000,
)
REPETITION_PENALTY = ParamSpec(
    "repetition_penalty",
    "Repetition penalty",
    "float",
    "Above 1 discourages repeating words; 1 means no penalty.",
    minimum=0,
    maximum=10,
    exclusive_min=True,
)

COMMON_PARAMS: tuple[ParamSpec, ...] = (TEMPERATURE, MAX_TOKENS, TOP_P, STOP, SEED)


def validate_params(
    values: Mapping[str, Any],
    specs: Iterable[ParamSpec],
    *,
    context_length: int | None = None,
    prefix: str = "",
) -> dict[str, str]:
    """Check every given value against its spec. Returns {field: message}; empty when valid.

    Unknown names are rejected too, so a typo in a card's defaults does not pass silently.
    """
    by_name = {s.name: s for s in specs}
    errors: dict[str, str] = {}
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is None:
            if value is not None:
                errors[prefix + name] = f"'{name}' is not a setting this connection kind accepts."
            continue
        problem = spec.check(value)
        if problem:
            errors[prefix + name] = problem
    max_tokens = values.get("max_tokens")
    if (
        context_length
        and isinstance(max_tokens, int)
        and max_tokens > context_length
        and prefix + "max_tokens" not in errors
    ):
        errors[prefix + "max_tokens"] = (
            f"Max tokens ({max_tokens}) is larger than the model's context length "
            f"({context_length})."
        )
    return errors


def clean_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop unset values and normalise stop sequences to a list."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or value == "" or value == []:
            continue
        if name == "stop" and isinstance(value, str):
            value = [line for line in value.splitlines() if line]
            if not value:
                continue
        out[name] = value
    return out
