"""Custom API models in the DynamoEval style: one POST endpoint, JSONata in between.

Wire format: protocols.md §5. Plugboard builds DynamoEval's *standard request* — a batch of
conversations, `{"messages": [[{role, content}, …], …], "N": n, "seq_len": …,
"temperature": …}` — and, when the card has a request expression, turns it into the API's
own body with JSONata (`$model` is bound to the card's model name). The reply goes through the
response expression, which must give DynamoEval's *standard response*: a JSON list with one
text (or one true/false verdict, for guardrail models) per conversation.

Assumption where DynamoEval's documentation is silent (protocols.md §5.2, §7): with N > 1 the
list holds N replies per conversation, grouped by conversation in order —
`[c1 r1, c1 r2, c2 r1, c2 r2]`. The count is checked; a mismatch is a clear BadResponse.

JSONata runs through jsonata-python with its pitfalls in mind (protocols.md §6.3): expressions
are compiled once per (thread, text), and each evaluation gets a fresh frame with its own time
and depth bounds, so a runaway expression ends with a plain error instead of hanging, and a
reused expression never inherits a stale clock or depth counter.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, cast

import httpx
from jsonata import JException, Jsonata

from core.inference import checks
from core.inference.http import (
    DETAIL_LIMIT,
    NO_RETRY,
    HttpEndpoint,
    RetryPolicy,
    parse_json,
    server_message,
    shared_client,
    transport_error,
)
from core.inference.registry import KindSpec
from core.inference.target import Auth, Target
from core.inference.types import (
    BadRequest,
    BadResponse,
    ConfigurationError,
    ConnectionReport,
    Details,
    Finish,
    GenerationParams,
    InferenceError,
    Message,
    Reply,
    ServerError,
    StreamEvent,
    StreamInterrupted,
    TextDelta,
    Usage,
)
from core.params import MAX_TOKENS, TEMPERATURE, ParamSpec
from core.secrets import mask, scrub

log = logging.getLogger("plugboard.custom_api")

# Bounds for one evaluation of a JSONata expression. Read at call time: tests may lower them.
EVAL_TIMEOUT_MS = 1000
EVAL_MAX_DEPTH = 500
# First retry waits about this long, then doubles (only with "Retry on failure" on).
RETRY_BASE_DELAY = 0.5
COMPILED_PER_THREAD = 32  # compiled expressions kept per thread (an edited form makes many)
MAX_BATCH_SIZE = 1024
MAX_N = 16

RESPONSE_TYPES = ("string", "boolean")
DEFAULT_HEADERS = {
    "Content-Type": "application/json;charset=UTF-8",
    "Accept": "application/json, text/plain, */*",
}

# --- presets ----------------------------------------------------------------------------------


class Preset(NamedTuple):
    label: str
    request_expression: str
    response_expression: str
    response_type: str


_OPENAI_REQUEST = """{
  "model": $model,
  "messages": $reduce(messages, $append),
  "max_tokens": seq_len,
  "temperature": temperature,
  "n": N
}"""

_DATABRICKS_REQUEST = """{
  "messages": $reduce(messages, $append),
  "max_tokens": seq_len,
  "temperature": temperature
}"""

_TGI_REQUEST = """{
  "inputs": $join($map($reduce(messages, $append), function($m) {
    ($m.role = "system" ? "System" : $m.role = "user" ? "User" : "Assistant")
      & ": " & $m.content
  }), "\\n") & "\\nAssistant:",
  "parameters": {
    "max_new_tokens": seq_len,
    "temperature": temperature > 0 ? temperature,
    "do_sample": temperature > 0
  }
}"""

# Choosing a preset fills the two expressions and the response type (the form's job); they
# stay editable. The chat presets merge the batch into one conversation: use batch size 1.
PRESETS: dict[str, Preset] = {
    "openai_chat": Preset(
        "OpenAI-style chat API (Together AI, OpenAI, vLLM…)",
        _OPENAI_REQUEST,
        "[choices.message.content]",
        "string",
    ),
    "databricks": Preset(
        "Databricks serving endpoint (…/serving-endpoints/<name>/invocations)",
        _DATABRICKS_REQUEST,
        "[choices.message.content]",
        "string",
    ),
    "tgi_generate": Preset(
        "Hugging Face TGI /generate",
        _TGI_REQUEST,
        "[generated_text]",
        "string",
    ),
    "passthrough": Preset(
        "DynamoEval standard format (no transformation)",
        "",
        "",
        "string",
    ),
}

# --- parameters and the kind's spec -----------------------------------------------------------

CUSTOM_API_PARAMS: tuple[ParamSpec, ...] = (
    replace(TEMPERATURE, help="Sent as temperature (0 to 2) in the standard request."),
    replace(
        MAX_TOKENS,
        label="Max length (seq_len)",
        help="Sent as seq_len in the standard request: the longest reply the API should give.",
    ),
    ParamSpec(
        "n",
        "N (replies per prompt)",
        "int",
        "Sent as N: how many replies the API should give for each conversation.",
        minimum=1,
        maximum=MAX_N,
        default=1,
    ),
)


@dataclass(frozen=True)
class CustomAPISettings:
    """The card's settings with their defaults. `from_dict` never fails; see validate_settings."""

    request_expression: str = ""
    response_expression: str = ""
    response_type: str = "string"
    batch_size: int = 1
    multi_turn: bool = True
    enable_retry: bool = False
    preset: str = "passthrough"

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CustomAPISettings:
        def text(key: str, default: str) -> str:
            value = values.get(key)
            return value if isinstance(value, str) else default

        def flag(key: str, default: bool) -> bool:
            value = values.get(key)
            return value if isinstance(value, bool) else default

        size = values.get("batch_size")
        return cls(
            request_expression=text("request_expression", ""),
            response_expression=text("response_expression", ""),
            response_type=text("response_type", "string"),
            batch_size=size if isinstance(size, int) and not isinstance(size, bool) else 1,
            multi_turn=flag("multi_turn", True),
            enable_retry=flag("enable_retry", False),
            preset=text("preset", "passthrough"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_expression": self.request_expression,
            "response_expression": self.response_expression,
            "response_type": self.response_type,
            "batch_size": self.batch_size,
            "multi_turn": self.multi_turn,
            "enable_retry": self.enable_retry,
            "preset": self.preset,
        }


def validate_settings(settings: Mapping[str, Any]) -> dict[str, str]:
    """Every problem with a card's settings, keyed "settings.<name>" (KindSpec.settings_rules).

    Missing keys take their defaults; both expressions are compiled.
    """
    errors: dict[str, str] = {}
    for key in ("request_expression", "response_expression"):
        value = settings.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            errors[f"settings.{key}"] = "The expression must be text."
            continue
        problem = check_expression(value)
        if problem:
            errors[f"settings.{key}"] = problem
    response_type = settings.get("response_type", "string")
    if response_type not in RESPONSE_TYPES:
        errors["settings.response_type"] = (
            f"Response type must be string or boolean (got {response_type!r})."
        )
    size = settings.get("batch_size", 1)
    if isinstance(size, bool) or not isinstance(size, int):
        errors["settings.batch_size"] = "Batch size must be a whole number, 1 or more."
    elif not 1 <= size <= MAX_BATCH_SIZE:
        errors["settings.batch_size"] = (
            f"Batch size must be between 1 and {MAX_BATCH_SIZE} (got {size})."
        )
    for key, label in (("multi_turn", "Multi-turn"), ("enable_retry", "Retry on failure")):
        if key in settings and not isinstance(settings[key], bool):
            errors[f"settings.{key}"] = f"{label} must be on or off."
    preset = settings.get("preset")
    if preset is not None and not isinstance(preset, str):
        errors["settings.preset"] = "The preset is a name."
    return errors


_SETTING_LABELS = {
    "request_expression": "Request expression",
    "response_expression": "Response expression",
    "response_type": "Response type",
    "batch_size": "Batch size",
    "multi_turn": "Multi-turn",
    "enable_retry": "Retry on failure",
    "preset": "Preset",
}


def settings_problem(settings: Mapping[str, Any]) -> str:
    """validate_settings as one sentence naming each setting; empty when all is well."""
    problems = validate_settings(settings)
    if not problems:
        return ""
    parts = []
    for key, message in problems.items():
        name = key.removeprefix("settings.")
        parts.append(f"{_SETTING_LABELS.get(name, name)}: {message}")
    return "Check the card's settings. " + " ".join(parts)


SPEC = KindSpec(
    kind="custom_api",
    label="Custom API (JSONata)",
    description="Any HTTP API that takes a POST, in the style of DynamoEval's custom API models: "
    "Plugboard sends its standard batch request, reshaped by your JSONata request expression, "
    "and reads the reply through your response expression. Presets for OpenAI-style chat APIs "
    "(Together AI), Databricks serving endpoints and TGI.",
    adapter="core.inference.custom_api:CustomAPIAdapter",
    params=CUSTOM_API_PARAMS,
    url_placeholder="https://api.together.xyz/v1/chat/completions",
    url_help="The full address that accepts the POST; nothing is added to it.",
    needs_model=False,
    model_label="Model name (optional)",
    model_placeholder="mistralai/Mistral-7B-Instruct-v0.3",
    model_help="Available to the request expression as $model (the OpenAI-style preset sends "
    "it as model).",
    settings_defaults=CustomAPISettings().to_dict(),
    settings_rules=validate_settings,
)


# --- the standard request ---------------------------------------------------------------------


def multi_turn_note(settings: Mapping[str, Any]) -> str:
    """What the form should say about multi-turn; empty when the whole conversation is sent."""
    if CustomAPISettings.from_dict(settings).multi_turn:
        return ""
    return (
        "Multi-turn is off: only the last user message of each conversation is sent "
        "(no system prompt, no earlier turns)."
    )


def standard_messages(messages: Sequence[Message], multi_turn: bool = True) -> list[dict[str, str]]:
    """One conversation in the standard format; single-turn keeps only the last user message."""
    if multi_turn:
        return [{"role": m.role, "content": m.content} for m in messages]
    last = next((m for m in reversed(messages) if m.role == "user"), None)
    if last is None:
        raise BadRequest(
            "There is no user message to send: multi-turn is off, so only the last user "
            "message of a conversation is sent."
        )
    return [{"role": "user", "content": last.content}]


def replies_wanted(params: GenerationParams) -> int:
    n = params.extra.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise BadRequest(f"N (replies per prompt) must be a whole number from 1 to {MAX_N}.")
    return n


def standard_body(
    conversations: Sequence[Sequence[Message]],
    params: GenerationParams,
    *,
    multi_turn: bool = True,
) -> dict[str, Any]:
    """DynamoEval's standard request for a batch of conversations (protocols.md §5.1).

    Unset temperature and max length take the parameters' defaults, since the format
    always carries them.
    """
    temperature = params.temperature
    seq_len = params.max_tokens
    return {
        "messages": [standard_messages(c, multi_turn) for c in conversations],
        "N": replies_wanted(params),
        "seq_len": seq_len if seq_len is not None else CUSTOM_API_PARAMS[1].default,
        "temperature": temperature if temperature is not None else CUSTOM_API_PARAMS[0].default,
    }


# --- JSONata ----------------------------------------------------------------------------------


class ExpressionFailed(Exception):
    """A JSONata expression could not be compiled or evaluated. `str()` is plain words.

    `reason` is "syntax", "timeout", "depth" or "error"; `code` the JSONata code if any.
    """

    def __init__(self, message: str, *, reason: str, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.code = code


_local = threading.local()


def compiled(text: str) -> Any:
    """The compiled expression for `text` on this thread (compiled on first use).

    jsonata-python keeps per-thread state, so each thread compiles its own copy.
    Raises whatever the library raises on a syntax error (see `check_expression`).
    """
    cache: OrderedDict[str, Any] | None = getattr(_local, "compiled", None)
    if cache is None:
        cache = OrderedDict()
        _local.compiled = cache
    expr = cache.get(text)
    if expr is None:
        expr = Jsonata(text)
        cache[text] = expr
        if len(cache) > COMPILED_PER_THREAD:
            cache.popitem(last=False)
    else:
        cache.move_to_end(text)
    return expr


def _position(text: str, location: int) -> str:
    """JSONata's character position (just past the offending token) as line and column."""
    location = max(1, min(location, len(text) or 1))
    before = text[: location - 1]
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return f"line {line}, column {column}"


def _jsonata_message(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, JException) and "Object" in JException.error_codes.get(exc.error, ""):
        # The port's message table says "Object" where JSONata says "function".
        text = text.replace(" Object", " function")
    elif not text:
        text = type(exc).__name__
    return text.rstrip(".")


def _syntax_failure(text: str, exc: BaseException) -> ExpressionFailed:
    said = _jsonata_message(exc)
    if isinstance(exc, JException):
        where = _position(text, exc.location) if exc.location >= 0 else "the end"
        return ExpressionFailed(
            f"Syntax error at {where}: {said}.", reason="syntax", code=str(exc.error)
        )
    return ExpressionFailed(
        f"Syntax error: the expression could not be read ({type(exc).__name__}: {said}).",
        reason="syntax",
    )


def check_expression(text: str) -> str | None:
    """None when `text` is empty or compiles, else the syntax problem in plain words."""
    if not text.strip():
        return None
    try:
        compiled(text)
    except Exception as exc:  # noqa: BLE001 — the parser raises more than JException
        return _syntax_failure(text, exc).message
    return None


def evaluate_expression(text: str, data: Any, bindings: Mapping[str, Any] | None = None) -> Any:
    """Evaluate `text` on `data` within EVAL_TIMEOUT_MS and EVAL_MAX_DEPTH.

    A fresh frame per call carries the bounds (a constructor `timeout=` would count from
    compilation, and `stack=` never resets after a failure) and the bindings.
    Raises ExpressionFailed.
    """
    try:
        expr = compiled(text)
    except Exception as exc:  # noqa: BLE001
        raise _syntax_failure(text, exc) from None
    timeout_ms, max_depth = EVAL_TIMEOUT_MS, EVAL_MAX_DEPTH
    frame = Jsonata.Frame(None)
    frame.set_runtime_bounds(timeout_ms, max_depth)
    for name, value in (bindings or {}).items():
        frame.bind(name, value)
    # The library reads the "current" expression of the thread ($now's clock, applying
    # lambdas); make it this one, not whichever was compiled last.
    Jsonata.CURRENT.jsonata = expr
    try:
        return expr.evaluate(data, frame)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except JException as exc:
        if exc.error == "D1012":
            raise ExpressionFailed(
                f"took longer than {timeout_ms} ms and was stopped — an endless loop?",
                reason="timeout",
                code="D1012",
            ) from None
        if exc.error == "D1011":
            raise _too_deep(max_depth) from None
        said = _jsonata_message(exc)
        where = f" (at {_position(text, exc.location)})" if exc.location > 0 else ""
        raise ExpressionFailed(
            f"failed: {said}{where} [{exc.error}].", reason="error", code=str(exc.error)
        ) from None
    except Exception as exc:  # noqa: BLE001 — not every JSONata failure is a JException
        raise ExpressionFailed(
            f"failed: {_jsonata_message(exc)} ({type(exc).__name__}).", reason="error"
        ) from None


def _too_deep(max_depth: int) -> ExpressionFailed:
    return ExpressionFailed(
        f"went more than {max_depth} levels deep and was stopped — "
        "a recursive function that never ends?",
        reason="depth",
        code="D1011",
    )


def _plain_json(value: Any) -> Any:
    """A JSONata result as plain JSON data (its sequences become lists); None if impossible."""
    return json.loads(json.dumps(value))


# --- reading replies --------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a true/false value ({json.dumps(value)})"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "…"
        return f"a text ({json.dumps(shown)})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, dict):
        keys = ", ".join(list(value)[:6]) + (", …" if len(value) > 6 else "")
        return f"an object with keys {keys}" if value else "an empty object"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    return f"a {type(value).__name__}"


def _check_replies(value: Any, response_type: str, *, expression: bool) -> list[Any]:
    """The standard response, checked: a list of texts, or of true/false values."""
    wanted = "true/false values" if response_type == "boolean" else "texts"
    if expression:
        subject = "The response expression should give a list of " + wanted
    else:
        subject = (
            "The endpoint's reply should itself be a JSON list of "
            + wanted
            + " (there is no response expression)"
        )
    if not isinstance(value, list):
        hint = ""
        if expression and isinstance(value, str | bool):
            hint = " Wrap the expression in [ ] to make a list."
        elif not expression and isinstance(value, dict):
            hint = (
                " Add a response expression that picks the replies out, "
                "such as [choices[0].message.content]."
            )
        elif expression and value is None:
            hint = " It matched nothing in the reply: check the field names."
        raise BadResponse(f"{subject}, got {_describe(value)}.{hint}")
    kind: type = bool if response_type == "boolean" else str
    for i, item in enumerate(value, start=1):
        if not isinstance(item, kind) or (kind is not bool and isinstance(item, bool)):
            hint = ""
            if response_type == "string" and isinstance(item, bool):
                hint = " For a guardrail model, set Response type to boolean."
            elif response_type == "boolean" and isinstance(item, str):
                hint = " For a model that answers in text, set Response type to string."
            raise BadResponse(f"{subject}, got a list whose item {i} is {_describe(item)}.{hint}")
    return value


def _count_problem(got: int, conversations: int, n: int, *, expression: bool = False) -> str:
    expected = conversations * n
    plural = "s" if conversations != 1 else ""
    per = f" × N={n}" if n > 1 else ""
    said = (
        f"The endpoint gave {got} repl{'ies' if got != 1 else 'y'} for {conversations} "
        f"conversation{plural}{per}; expected {expected}"
    )
    if got == 0 and expression:
        return (
            f"{said}: the response expression found nothing in the reply. Check the field "
            "names it reads against the reply (shown in Details)."
        )
    message = f"{said}. Replies are matched to conversations in order, so the counts must agree"
    if n > 1:
        message += " (N replies per conversation, grouped by conversation)"
    if conversations > 1:
        message += (
            ". If the request expression merges the batch into one conversation "
            "(as the chat presets do), set Batch size to 1"
        )
    return message + "."


def _headers(*sources: Mapping[str, str]) -> dict[str, str]:
    """Later sources win, whatever the letter case of the header name."""
    merged: dict[str, tuple[str, str]] = {}
    for source in sources:
        for name, value in source.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


Replies = list[str] | list[bool]


# --- the adapter ------------------------------------------------------------------------------


class CustomAPIAdapter:
    """One POST endpoint; `complete` for batches, `stream_chat` for one conversation.

    Events from `stream_chat` (one non-streaming request):
      string model:  TextDelta(first reply), Details({"replies": [...]}) when N > 1,
                     Usage() (the API gives no token counts), Finish("stop")
      boolean model: TextDelta("true" / "false", comma-separated when N > 1),
                     Details({"verdicts": [...]}), Usage(), Finish("stop")
    """

    def __init__(self, target: Target, client: httpx.Client | None = None) -> None:
        self.target = target
        self.settings = CustomAPISettings.from_dict(target.settings)
        self.url = target.base_url.strip()
        self.retry = (
            RetryPolicy(
                max_retries=target.max_retries,
                max_wait=target.max_retry_wait,
                base_delay=RETRY_BASE_DELAY,
            )
            if self.settings.enable_retry
            else NO_RETRY
        )
        self.http = HttpEndpoint(
            client or shared_client(),
            self.url,
            headers=self.request_headers(),
            timeouts=target.timeouts,
            retry=self.retry,
            secrets=target.secrets,
            egress=target.egress,
        )
        self.http.base_url = self.url  # the full URL, kept exactly (a trailing / may matter)

    # --- building requests --------------------------------------------------------------------

    def request_headers(self, *, masked: bool = False) -> dict[str, str]:
        """Defaults, then the connection's extra headers, then auth (the key masked if asked)."""
        auth = self.target.auth
        if masked:
            auth = Auth(auth.type, mask(auth.secret), auth.header, auth.prefix)
        extra = self.target.headers
        if masked:
            extra = {k: self._scrub(v) for k, v in extra.items()}
        return _headers(DEFAULT_HEADERS, extra, auth.headers())

    def standard_body(
        self, conversations: Sequence[Sequence[Message]], params: GenerationParams
    ) -> dict[str, Any]:
        return standard_body(conversations, params, multi_turn=self.settings.multi_turn)

    def transform_request(self, standard: dict[str, Any]) -> Any:
        """The body to POST: the request expression's result, or the standard body as is."""
        expression = self.settings.request_expression
        if not expression.strip():
            return standard
        try:
            result = evaluate_expression(expression, standard, {"model": self.target.model or None})
        except ExpressionFailed as exc:
            raise self._expression_error("request", exc, standard) from None
        if result is None:
            raise ConfigurationError(
                "The request expression gave nothing (undefined): check the field names it "
                "reads (messages, N, seq_len, temperature)."
            )
        try:
            return _plain_json(result)
        except (TypeError, ValueError):
            raise ConfigurationError(
                "The request expression gave something that is not JSON (a function?)."
            ) from None

    def transform_response(self, data: Any) -> list[Any]:
        """The standard response from the endpoint's parsed reply, checked for its type."""
        expression = self.settings.response_expression
        result = data
        if expression.strip():
            try:
                result = evaluate_expression(expression, data)
            except ExpressionFailed as exc:
                raise self._expression_error("response", exc, data) from None
            try:
                result = _plain_json(result)
            except (TypeError, ValueError):
                raise BadResponse(
                    "The response expression gave something that is not JSON (a function?)."
                ) from None
        return _check_replies(
            result, self.settings.response_type, expression=bool(expression.strip())
        )

    def _expression_error(self, which: str, exc: ExpressionFailed, data: Any) -> InferenceError:
        message = f"The {which} expression {exc.message}"
        if exc.reason == "syntax":
            message = f"The {which} expression has a s{exc.message[1:]}"  # "…has a syntax error"
        detail = self._scrub(
            f"JSONata {exc.code or exc.reason} in the {which} expression, evaluated on:\n"
            + json.dumps(data)[:DETAIL_LIMIT]
        )
        if which == "response" and exc.reason == "error":
            # The same expression may work on a reply of the shape it expects.
            return BadResponse(
                message + " Check the expression against the reply's shape.", detail=detail
            )
        return ConfigurationError(message, detail=detail)

    # --- sending ------------------------------------------------------------------------------

    def _post(self, body: Any, retry: RetryPolicy | None = None) -> bytes:
        response = self.http.send("POST", "", body, retry=retry or self.retry)
        try:
            return response.read()
        except httpx.TransportError as exc:
            raise transport_error(exc, self.url, self.http.timeouts) from None
        finally:
            response.close()

    def _exchange(
        self, conversations: Sequence[Sequence[Message]], params: GenerationParams
    ) -> list[Any]:
        """One request for a batch; replies in order, `len(conversations) × N` of them."""
        n = replies_wanted(params)
        body = self.transform_request(self.standard_body(conversations, params))
        data = parse_json(self._post(body), self.url, self.http.secrets)
        try:
            replies = self.transform_response(data)
            if len(replies) != len(conversations) * n:
                raise BadResponse(
                    _count_problem(
                        len(replies),
                        len(conversations),
                        n,
                        expression=bool(self.settings.response_expression.strip()),
                    )
                )
        except BadResponse as exc:
            raise self._unreadable(exc, data) from None
        return replies

    def _unreadable(self, exc: BadResponse, data: Any) -> InferenceError:
        """A 200 reply that gave no replies: the error the endpoint put in it, if it did
        (`{"error": …}`), else `exc`; either way with the reply in the Details."""
        reply = self._scrub(f"reply from {self.url}:\n{json.dumps(data)[:DETAIL_LIMIT]}")
        if isinstance(data, dict) and data.get("error"):
            said = self._scrub(server_message(json.dumps(data)))
            if said and said[-1] not in ".!?":
                said += "."
            return ServerError(
                f"The endpoint answered with an error instead of a reply: {said} "
                "Try again; if it keeps failing, the endpoint's own logs may say why.",
                detail=reply,
            )
        if not exc.detail:
            exc.detail = reply
        return exc

    def _check_settings(self) -> None:
        problem = settings_problem(self.target.settings)
        if problem:
            raise ConfigurationError(problem)

    def complete(
        self, conversations: Sequence[Sequence[Message]], params: GenerationParams
    ) -> Replies:
        """Replies for many conversations, in order, `batch_size` conversations a request.

        With N > 1 the list holds N replies per conversation, grouped by conversation:
        conversation i's replies are `result[i * N:(i + 1) * N]`.
        """
        self._check_settings()
        size = self.settings.batch_size
        replies: list[Any] = []
        batches = [conversations[i : i + size] for i in range(0, len(conversations), size)]
        log.info(
            "custom API batch: %d conversations, %d requests of up to %d",
            len(conversations),
            len(batches),
            size,
        )
        for batch in batches:
            replies.extend(self._exchange(batch, params))
        return cast(Replies, replies)

    def stream_chat(
        self, messages: list[Message], params: GenerationParams
    ) -> Generator[StreamEvent, None, None]:
        self._check_settings()
        replies = self._exchange([messages], params)
        if self.settings.response_type == "boolean":
            yield TextDelta(", ".join(json.dumps(v) for v in replies))
            yield Details({"verdicts": replies})
        else:
            if replies[0]:
                yield TextDelta(replies[0])
            if len(replies) > 1:
                yield Details({"replies": replies})
        yield Usage()
        yield Finish("stop")

    def chat(self, messages: list[Message], params: GenerationParams) -> Reply:
        text = ""
        details: dict[str, Any] | None = None
        for event in self.stream_chat(messages, params):
            if isinstance(event, TextDelta):
                text += event.text
            elif isinstance(event, Details):
                details = event.data
        return Reply(text, "stop", Usage(), details)

    def list_remote_models(self) -> list[str]:
        return []  # a custom API has no model list

    # --- the form's preview and Test connection -----------------------------------------------

    def _scrub(self, text: str) -> str:
        return scrub(text, self.target.secrets)

    def _scrub_data(self, data: Any) -> Any:
        text = json.dumps(data)
        cleaned = self._scrub(text)
        return data if cleaned == text else json.loads(cleaned)

    def preview_request(self, messages: list[Message], params: GenerationParams) -> dict[str, Any]:
        """What would be sent for one conversation, for the form's live preview.

        Never raises for a bad expression: `body` is then None and `error` says why.
        """
        preview: dict[str, Any] = {
            "url": self.url,
            "headers": self.request_headers(masked=True),
            "standard_body": None,
            "body": None,
            "error": None,
        }
        try:
            standard = self.standard_body([messages], params)
            preview["standard_body"] = self._scrub_data(standard)
            preview["body"] = self._scrub_data(self.transform_request(standard))
        except InferenceError as exc:
            preview["error"] = self._scrub(exc.message)
        return preview

    def test_connection(self) -> ConnectionReport:
        """A real, minimal request: one conversation, N = 1, a short seq_len; no retries.

        `report.info` gets `standard_body`, `request_body`, `raw_response` and `transformed`
        as far as the test got.
        """
        report = ConnectionReport()
        problem = settings_problem(self.target.settings)
        if problem:
            return report.failed("Settings", problem)
        if not checks.resolve(self.url, report):
            return report
        expression = {
            "request": bool(self.settings.request_expression.strip()),
            "response": bool(self.settings.response_expression.strip()),
        }
        standard = self.standard_body(
            [[Message("user", "Say hi.")]], GenerationParams(max_tokens=16)
        )
        report.info["standard_body"] = standard
        try:
            body = self.transform_request(standard)
        except InferenceError as exc:
            return report.failed("Request transformation", exc.message)
        report.info["request_body"] = self._scrub_data(body)
        if expression["request"]:
            report.passed("Request transformation", "The request expression gave a body.")
        try:
            raw = self._post(body, retry=NO_RETRY)
        except InferenceError as exc:
            if exc.detail:
                report.info["raw_response"] = exc.detail.split("\n", 1)[-1][:DETAIL_LIMIT]
            failure = checks.classify(exc, model=self.target.model)
            layer, message = failure.layer, failure.message
            if exc.status in (404, 405):
                layer = "Path"
            elif isinstance(exc, StreamInterrupted):  # dropped before any reply
                layer = "Connection"
            elif failure.layer in ("Request", "Model name") and exc.status in (400, 413, 422):
                layer = "Request transformation"
                message += " Check that the request body matches what the API expects."
            return report.failed(layer, message)
        report.passed("Connection", "The endpoint answered.")
        shape_layer = "Response transformation" if expression["response"] else "Response shape"
        try:
            data = parse_json(raw, self.url, self.http.secrets)
        except InferenceError as exc:
            report.info["raw_response"] = self._scrub(
                raw[:DETAIL_LIMIT].decode("utf-8", errors="replace")
            )
            return report.failed("Response shape", exc.message)
        report.info["raw_response"] = self._scrub_data(data)
        try:
            replies = self.transform_response(data)
        except InferenceError as exc:
            return report.failed(shape_layer, exc.message)
        report.info["transformed"] = self._scrub_data(replies)
        if len(replies) != 1:
            return report.failed(
                shape_layer, _count_problem(len(replies), 1, 1, expression=expression["response"])
            )
        shown = json.dumps(replies[0])
        shown = shown if len(shown) <= 62 else shown[:60] + "…"
        kind = "verdict" if self.settings.response_type == "boolean" else "reply"
        report.passed(shape_layer, f"Got one {kind}: {self._scrub(shown)}.")
        return report
