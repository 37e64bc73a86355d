"""One chat turn: save the prompt, fit the history to the context, stream, record the reply.

`stream_turn()` yields `TextDelta`s as they arrive and ends with one `TurnResult`. Whatever
happens — success, an error, or the person pressing Stop (the generator is closed) — the
prompt, any partial reply, the error and one UsageEvent are saved.

A reply still streaming after CHECKPOINT_SECONDS is saved as it goes (status "streaming",
its text brought up to date every CHECKPOINT_SECONDS), so a process killed mid-reply leaves
what had arrived up to the last checkpoint; readers show such a leftover row as interrupted
(`core.history.message_view`). Short replies are saved once, at their end.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from core import catalog, history, templates
from core.catalog import CardView
from core.history import MessageView
from core.inference.http import describe_error
from core.inference.registry import make_adapter
from core.inference.types import (
    Adapter,
    BadRequest,
    Details,
    Finish,
    GenerationParams,
    InferenceError,
    Message,
    TextDelta,
    Usage,
)
from core.params import ParamSpec, clean_params
from core.secrets import scrub
from core.tables import Conversation, UsageEvent, utcnow
from core.tables import Message as MessageRow
from core.workspace import Workspace

log = logging.getLogger("plugboard.chat")
MESSAGE_OVERHEAD = 4  # tokens a chat format spends per message on roles and separators
REPLY_RESERVE = 256
CHECKPOINT_SECONDS = 1.0  # how much of a streaming reply a crash may lose, at most


@dataclass(frozen=True)
class TurnRequest:
    model_id: int
    prompt: str
    conversation_id: int | None = None
    system_prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # overrides the card's defaults
    lane: int = 0
    turn: int | None = None  # compare runs give every lane the same turn; else the next one


@dataclass
class TurnResult:
    conversation_id: int
    text: str
    status: str  # ok | error | stopped
    error: InferenceError | None = None
    reply: MessageView | None = None
    dropped: int = 0  # older messages left out so the conversation fits the context
    prompt_message_id: int = 0

    @property
    def finish_reason(self) -> str | None:
        return self.reply.finish_reason if self.reply else None


TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """About four characters a token for English; used only when nothing better is known."""
    return math.ceil(len(text) / 4)


def fit_to_context(
    system: Message | None,
    past: Sequence[Message],
    new: Message,
    *,
    context_length: int | None,
    reserve: int,
    count: TokenCounter = estimate_tokens,
) -> tuple[list[Message], int]:
    """Keep the system prompt, the new message and as many of the newest turns as fit.

    Returns the messages to send and how many past messages were dropped. The kept history
    always starts with a user message, so the model never sees half a turn.
    """
    fixed = [m for m in (system, new) if m is not None]
    if not context_length:
        return [*fixed[:-1], *past, new], 0
    budget = context_length - reserve - sum(count(m.content) + MESSAGE_OVERHEAD for m in fixed)
    kept: list[Message] = []
    for message in reversed(past):
        cost = count(message.content) + MESSAGE_OVERHEAD
        if cost > budget:
            break
        budget -= cost
        kept.append(message)
    kept.reverse()
    while kept and kept[0].role != "user":
        kept.pop(0)
    dropped = len(past) - len(kept)
    return [*fixed[:-1], *kept, new], dropped


def usable_history(messages: Sequence[MessageView], lane: int = 0) -> list[Message]:
    """The turns of a lane worth sending again: answered prompts and their good replies.

    A prompt whose reply failed is left out, so retrying it does not send it twice.
    """
    out: list[Message] = []
    pending_user: MessageView | None = None
    for m in messages:
        if m.lane != lane:
            continue
        if m.role == "user":
            pending_user = m
        elif m.role == "assistant" and pending_user is not None:
            if m.status in ("ok", "stopped") and m.content:
                out += [Message("user", pending_user.content), Message("assistant", m.content)]
            pending_user = None
    return out


def effective_params(
    card: CardView, overrides: dict[str, Any], specs: Iterable[ParamSpec] | None = None
) -> dict[str, Any]:
    """The card's defaults, overridden per chat, limited to what the card accepts (its kind's
    parameters, or the narrower `specs` of the template it was made from)."""
    accepted = {p.name for p in (card.spec.params if specs is None else specs)}
    merged = {**card.default_params, **clean_params(overrides)}
    return {k: v for k, v in merged.items() if k in accepted and v is not None}


def _counter(adapter: Adapter) -> TokenCounter:
    counter = getattr(adapter, "count_tokens", None)
    return counter if callable(counter) else estimate_tokens


def stream_turn(
    ws: Workspace, request: TurnRequest, *, adapter: Adapter | None = None
) -> Generator[TextDelta | TurnResult, None, None]:
    card = catalog.get_card(ws, request.model_id)
    started = history.begin_turn(
        ws,
        request.conversation_id,
        request.prompt,
        lane=request.lane,
        model_id=card.id,
        model_name=card.display_name,
        system_prompt=request.system_prompt,
        params=request.params,
        turn=request.turn,
    )
    conversation_id, prompt_message = started.conversation_id, started.prompt
    template = templates.template_of(ws, card)  # its request schema narrows the parameters
    specs = templates.request_params(template) if template else None
    params = effective_params(card, request.params, specs)
    recorder = _Recorder(ws, card, conversation_id, request.lane, params)
    recorder.turn = prompt_message.turn
    recorder.prompt_message_id = prompt_message.id
    try:
        problems = card.spec.check_params(params, context_length=card.context_length)
        if template and not problems:
            problems = templates.check_request(template, params)
        if problems:
            raise BadRequest("Check the settings: " + " ".join(problems.values()))
        target = catalog.target_for_card(ws, card)
        adapter = adapter or make_adapter(target, ws.client)
        count = _counter(adapter)
        generation = GenerationParams.from_dict(params)
        system = Message("system", request.system_prompt) if request.system_prompt.strip() else None
        messages, recorder.dropped = fit_to_context(
            system,
            usable_history(started.past, request.lane),
            Message("user", request.prompt),
            context_length=card.context_length,
            reserve=min(generation.max_tokens or REPLY_RESERVE, (card.context_length or 0) // 2),
            count=count,
        )
        recorder.start(messages, count, target.secrets)
        with closing(adapter.stream_chat(messages, generation)) as events:
            for event in events:
                if isinstance(event, TextDelta):
                    recorder.on_text(event.text)
                    yield event
                else:
                    recorder.on_event(event)
    except GeneratorExit:
        recorder.finish("stopped")
        raise
    except Exception as exc:  # noqa: BLE001 — every failure is saved and shown, never raised
        recorder.finish("error", describe_error(exc))
    else:
        recorder.finish("ok")
    yield recorder.result()


class _Recorder:
    """Collects timings, text and usage of one reply, and saves them exactly once."""

    def __init__(
        self, ws: Workspace, card: CardView, conversation_id: int, lane: int, params: dict[str, Any]
    ) -> None:
        self.ws, self.card, self.conversation_id, self.lane = ws, card, conversation_id, lane
        self.params = params
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.parts: list[str] = []
        self.deltas = 0
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.details: dict[str, Any] | None = None
        self.sent: list[Message] = []
        self.count: TokenCounter = estimate_tokens
        self.secrets: tuple[str, ...] = ()
        self.dropped = 0
        self.prompt_message_id = 0
        self.turn = 0
        self.saved: MessageView | None = None
        self.status = "ok"
        self.error: InferenceError | None = None
        self.row_id: int | None = None  # the reply's row, once a checkpoint has saved it
        self.checkpointed = 0.0

    def start(self, messages: list[Message], count: TokenCounter, secrets: tuple[str, ...]) -> None:
        self.sent, self.count, self.secrets = messages, count, secrets
        self.started = time.perf_counter()

    def on_text(self, text: str) -> None:
        now = time.perf_counter()
        if self.first_token is None:
            self.first_token = self.checkpointed = now
        self.parts.append(text)
        self.deltas += 1
        if now - self.checkpointed >= CHECKPOINT_SECONDS:
            self.checkpoint(now)

    def checkpoint(self, now: float) -> None:
        """Save the reply so far (status "streaming"): a crash then loses only the newest text.

        Best effort: a failed checkpoint is logged and the stream goes on; the end saves all.
        """
        self.checkpointed = now
        text = "".join(self.parts)
        new_id: int | None = None
        try:
            with self.ws.session() as session:
                row = session.get(MessageRow, self.row_id) if self.row_id else None
                if row is None:  # the first checkpoint (or its row was deleted meanwhile)
                    row = self._row(history.STREAMING, text)
                    session.add(row)
                    session.flush()
                    new_id = row.id or 0
                    history.streaming_started(new_id)  # before other sessions can see it
                row.content = text
                row.ttft_ms = ((self.first_token or now) - self.started) * 1000
                row.latency_ms = (now - self.started) * 1000
                row.completion_tokens = self.deltas
                row.tokens_estimated = True
                session.add(row)
        except Exception:  # the reply goes on; its end is saved as usual
            if new_id is not None:
                history.streaming_ended(new_id)
            log.warning("could not checkpoint a streaming reply", exc_info=True)
            return
        if new_id is not None:
            self.row_id = new_id

    def _row(self, status: str, text: str) -> MessageRow:
        return MessageRow(
            conversation_id=self.conversation_id,
            lane=self.lane,
            turn=self.turn,
            role="assistant",
            content=text,
            model_id=self.card.id,
            model_name=self.card.display_name,
            status=status,
            params=dict(self.params),
        )

    def on_event(self, event: Usage | Finish | Details) -> None:
        if isinstance(event, Usage):
            self.usage = Usage(
                event.prompt_tokens
                if event.prompt_tokens is not None
                else self.usage.prompt_tokens,
                event.completion_tokens
                if event.completion_tokens is not None
                else self.usage.completion_tokens,
            )
        elif isinstance(event, Finish):
            self.finish_reason = event.reason
        elif isinstance(event, Details):
            self.details = event.data

    def _tokens(self, text: str) -> tuple[int | None, int | None, bool]:
        prompt, completion = self.usage.prompt_tokens, self.usage.completion_tokens
        estimated = False
        if prompt is None and self.sent:
            prompt = sum(self.count(m.content) + MESSAGE_OVERHEAD for m in self.sent)
            estimated = True
        if completion is None and (text or self.deltas):
            # Streaming servers send about one token a chunk; long chunks mean more.
            completion = max(self.deltas, self.count(text) if text else 0)
            estimated = True
        return prompt, completion, estimated

    def finish(self, status: str, error: InferenceError | None = None) -> None:
        if self.saved is not None:
            return
        self.status, self.error = status, error
        ended = time.perf_counter()
        text = "".join(self.parts)
        prompt_tokens, completion_tokens, estimated = self._tokens(text)
        ttft_ms = (self.first_token - self.started) * 1000 if self.first_token else None
        latency_ms = (ended - self.started) * 1000
        finish_reason = self.finish_reason or ("stopped" if status == "stopped" else None)
        final = {
            "content": text,
            "status": status,
            "finish_reason": finish_reason,
            "error_kind": error.kind if error else None,
            "error_message": scrub(error.message, self.secrets) if error else None,
            "error_detail": scrub(error.detail, self.secrets) if error else None,
            "ttft_ms": ttft_ms,
            "latency_ms": latency_ms,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "tokens_estimated": estimated,
            "details": self.details,
        }
        self.saved = self._save(final)
        self._record_usage(
            status, error, prompt_tokens, completion_tokens, estimated, ttft_ms, latency_ms
        )

    def _save(self, final: dict[str, Any]) -> MessageView:
        """The reply's final state: a new row, or the checkpointed one brought up to date."""
        if self.row_id is not None:
            try:
                with self.ws.session() as session:
                    row = session.get(MessageRow, self.row_id)
                    if row is not None:
                        for name, value in final.items():
                            setattr(row, name, value)
                        session.add(row)
                        conversation = session.get(Conversation, self.conversation_id)
                        if conversation is not None:
                            conversation.updated_at = utcnow()
                            session.add(conversation)
                        session.flush()
                        return history.message_view(row)
            finally:
                history.streaming_ended(self.row_id)
        # No checkpoint yet (or its row was deleted meanwhile, as Retry does): a new row.
        row = self._row(final["status"], final["content"])
        for name, value in final.items():
            setattr(row, name, value)
        return history.add_message(self.ws, self.conversation_id, row)

    def _record_usage(
        self,
        status: str,
        error: InferenceError | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        estimated: bool,
        ttft_ms: float | None,
        latency_ms: float,
    ) -> None:
        if not self.sent:  # refused before any request was made: nothing to count
            return
        with self.ws.session() as session:
            session.add(
                UsageEvent(
                    model_id=self.card.id,
                    model_name=self.card.display_name,
                    provider_id=self.card.provider.id,
                    provider_name=self.card.provider.name,
                    kind=self.card.kind,
                    status=status,
                    error_kind=error.kind if error else None,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    tokens_estimated=estimated,
                    ttft_ms=ttft_ms,
                    latency_ms=latency_ms,
                )
            )
        if error:
            log.warning(
                "turn failed: model=%r kind=%s status=%s: %s",
                self.card.display_name,
                error.kind,
                error.status,
                scrub(error.message, self.secrets),
            )
        else:
            log.info(
                "turn %s: model=%r ttft_ms=%s latency_ms=%.0f tokens=%s/%s",
                status,
                self.card.display_name,
                f"{ttft_ms:.0f}" if ttft_ms is not None else "-",
                latency_ms,
                prompt_tokens,
                completion_tokens,
            )

    def result(self) -> TurnResult:
        return TurnResult(
            conversation_id=self.conversation_id,
            text="".join(self.parts),
            status=self.status,
            error=self.error,
            reply=self.saved,
            dropped=self.dropped,
            prompt_message_id=self.prompt_message_id,
        )


def collect(events: Iterator[TextDelta | TurnResult]) -> TurnResult:
    """Run a turn to the end without displaying it (CLI without streaming, tests)."""
    result: TurnResult | None = None
    for event in events:
        if isinstance(event, TurnResult):
            result = event
    assert result is not None, "stream_turn always ends with a TurnResult"
    return result
