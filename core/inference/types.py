"""The vocabulary every adapter speaks: messages in, stream events out, typed errors.

Pages and `core.chat` only ever see these, whatever the wire format was.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    """Common generation controls; `extra` carries kind-specific ones (top_k, best_of…)."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    COMMON: ClassVar[tuple[str, ...]] = ("temperature", "max_tokens", "top_p", "stop", "seed")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GenerationParams:
        """Build from a card's or a chat's stored parameters; unknown keys go to `extra`."""
        stop = values.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        return cls(
            temperature=values.get("temperature"),
            max_tokens=values.get("max_tokens"),
            top_p=values.get("top_p"),
            stop=tuple(s for s in stop if s),
            seed=values.get("seed"),
            extra={k: v for k, v in values.items() if k not in cls.COMMON and v is not None},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "stop": list(self.stop),
            "seed": self.seed,
            **self.extra,
        }
        return {k: v for k, v in out.items() if v is not None and v != []}


# --- stream events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str


def token_count(value: Any) -> int | None:
    """A token count a server sent (a JSON number or a header), or None if it is not one."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def finish_reason(value: Any) -> str | None:
    """A server's finish reason as text (None when it sent none)."""
    if not value:
        return None
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int | float) else "unknown"


@dataclass(frozen=True, slots=True)
class Details:
    """Extra per-reply data some servers return (token log-probabilities, seed, alternatives)."""

    data: dict[str, Any]


StreamEvent = TextDelta | Usage | Finish | Details


@dataclass
class Reply:
    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    details: dict[str, Any] | None = None


# --- connection report ------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckStep:
    """One layer of a connection test: `layer` is what was checked, in plain words."""

    layer: str
    ok: bool
    message: str


@dataclass
class ConnectionReport:
    steps: list[CheckStep] = field(default_factory=list)
    remote_models: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def summary(self) -> str:
        failed = next((s for s in self.steps if not s.ok), None)
        if failed:
            return f"{failed.layer}: {failed.message}"
        return self.steps[-1].message if self.steps else "Nothing was checked."

    def passed(self, layer: str, message: str) -> None:
        self.steps.append(CheckStep(layer, True, message))

    def failed(self, layer: str, message: str) -> ConnectionReport:
        self.steps.append(CheckStep(layer, False, message))
        return self


# --- errors -----------------------------------------------------------------------------------


class InferenceError(Exception):
    """A failure a person can act on. `str(err)` is the plain-words message.

    `detail` keeps what an engineer needs (status, body excerpt) with secrets scrubbed.
    """

    kind: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class ConnectionFailed(InferenceError):
    kind = "connection"
    retryable = True


class RequestTimedOut(InferenceError):
    kind = "timeout"


class AuthFailed(InferenceError):
    kind = "auth"


class NotFound(InferenceError):
    kind = "not_found"


class BadRequest(InferenceError):
    kind = "bad_request"


class RateLimited(InferenceError):
    kind = "rate_limited"
    retryable = True


class ServerError(InferenceError):
    kind = "server"
    retryable = True


class BadResponse(InferenceError):
    kind = "bad_response"


class StreamInterrupted(InferenceError):
    kind = "interrupted"


class Blocked(InferenceError):
    """This server's egress rules do not allow the endpoint's host."""

    kind = "blocked"


class ConfigurationError(InferenceError):
    """The card itself is unusable (missing file, bad template…), before any request."""

    kind = "config"


ERROR_KINDS: dict[str, type[InferenceError]] = {
    cls.kind: cls
    for cls in (
        InferenceError,
        ConnectionFailed,
        RequestTimedOut,
        AuthFailed,
        NotFound,
        BadRequest,
        RateLimited,
        ServerError,
        BadResponse,
        StreamInterrupted,
        Blocked,
        ConfigurationError,
    )
}


# --- the adapter contract ---------------------------------------------------------------------


class Adapter(Protocol):
    def stream_chat(
        self, messages: list[Message], params: GenerationParams
    ) -> Generator[StreamEvent, None, None]: ...

    def chat(self, messages: list[Message], params: GenerationParams) -> Reply: ...

    def test_connection(self) -> ConnectionReport: ...

    def list_remote_models(self) -> list[str]: ...
