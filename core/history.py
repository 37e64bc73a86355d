"""Sandbox conversations and their messages: create, list, open, rename, delete."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from core.tables import Conversation, Message, utcnow
from core.workspace import Workspace

TITLE_LENGTH = 60

# A reply saved while it streams (core.chat checkpoints it) has this status until its end.
STREAMING = "streaming"
INTERRUPTED_MESSAGE = (
    "Plugboard stopped while this reply was streaming (the app was restarted or crashed). "
    "The text above is what had been saved; Retry to ask again."
)
# Ids of the replies this process is streaming right now. A "streaming" row that is not one
# of them was left by a process that died mid-reply: readers see it as interrupted.
_live_replies: set[int] = set()
_live_lock = threading.Lock()


def streaming_started(message_id: int) -> None:
    with _live_lock:
        _live_replies.add(message_id)


def streaming_ended(message_id: int) -> None:
    with _live_lock:
        _live_replies.discard(message_id)


def _interrupted(m: Message) -> bool:
    if m.status != STREAMING:
        return False
    with _live_lock:
        return m.id not in _live_replies


@dataclass(frozen=True)
class MessageView:
    id: int
    role: str
    content: str
    lane: int
    model_id: int | None
    model_name: str
    status: str
    finish_reason: str | None
    error_kind: str | None
    error_message: str | None
    error_detail: str | None
    ttft_ms: float | None
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_estimated: bool
    params: dict[str, Any]
    created_at: datetime
    details: dict[str, Any] | None = None
    turn: int = 0

    @property
    def tokens_per_second(self) -> float | None:
        """Completion tokens over the generation time (after the first token)."""
        if not self.completion_tokens or self.latency_ms is None:
            return None
        generating = (self.latency_ms - (self.ttft_ms or 0)) / 1000
        if generating <= 0.001:
            generating = self.latency_ms / 1000
        return self.completion_tokens / generating if generating > 0 else None


@dataclass(frozen=True)
class ConversationView:
    id: int
    title: str
    mode: str
    system_prompt: str
    params: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    message_count: int = 0
    messages: tuple[MessageView, ...] = ()


def message_view(m: Message) -> MessageView:
    """A read-only copy; a reply left half-streamed by a dead process reads as interrupted."""
    interrupted = _interrupted(m)
    return MessageView(
        id=m.id or 0,
        role=m.role,
        content=m.content,
        lane=m.lane,
        model_id=m.model_id,
        model_name=m.model_name,
        status="error" if interrupted else m.status,
        finish_reason=m.finish_reason,
        error_kind="interrupted" if interrupted else m.error_kind,
        error_message=INTERRUPTED_MESSAGE if interrupted else m.error_message,
        error_detail=m.error_detail,
        ttft_ms=m.ttft_ms,
        latency_ms=m.latency_ms,
        prompt_tokens=m.prompt_tokens,
        completion_tokens=m.completion_tokens,
        tokens_estimated=m.tokens_estimated,
        params=dict(m.params),
        created_at=m.created_at,
        details=dict(m.details) if m.details else None,
        turn=m.turn,
    )


def _view(
    c: Conversation, count: int = 0, messages: tuple[MessageView, ...] = ()
) -> ConversationView:
    return ConversationView(
        id=c.id or 0,
        title=c.title,
        mode=c.mode,
        system_prompt=c.system_prompt,
        params=dict(c.params),
        created_at=c.created_at,
        updated_at=c.updated_at,
        message_count=count or len(messages),
        messages=messages,
    )


def title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


def create_conversation(
    ws: Workspace,
    *,
    title: str = "",
    mode: str = "chat",
    system_prompt: str = "",
    params: dict[str, Any] | None = None,
) -> ConversationView:
    with ws.session() as session:
        conversation = Conversation(
            title=title_from(title) if title else "New chat",
            mode=mode,
            system_prompt=system_prompt,
            params=dict(params or {}),
        )
        session.add(conversation)
        session.flush()
        return _view(conversation)


def list_conversations(
    ws: Workspace, *, mode: str | None = None, limit: int = 50
) -> list[ConversationView]:
    with ws.session() as session:
        counts = (
            select(Message.conversation_id, func.count(col(Message.id)).label("n"))
            .group_by(col(Message.conversation_id))
            .subquery()
        )
        query = (
            select(Conversation, counts.c.n)
            .join(counts, counts.c.conversation_id == Conversation.id, isouter=True)
            .order_by(col(Conversation.updated_at).desc(), col(Conversation.id).desc())
            .limit(limit)
        )
        if mode:
            query = query.where(Conversation.mode == mode)
        return [_view(c, n or 0) for c, n in session.exec(query).all()]


def get_conversation(
    ws: Workspace, conversation_id: int, *, last: int | None = None
) -> ConversationView | None:
    """The conversation with its messages, oldest first; with `last`, only its newest `last`
    messages (`message_count` still counts them all): a page that draws the end of a long
    chat reads just that end."""
    with ws.session() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            return None
        query = select(Message).where(Message.conversation_id == conversation_id)
        if last is None:
            rows = session.exec(query.order_by(col(Message.id))).all()
            return _view(conversation, messages=tuple(message_view(m) for m in rows))
        newest = session.exec(query.order_by(col(Message.id).desc()).limit(last)).all()
        count = len(newest)
        if count == last:  # there may be more
            count = session.exec(
                select(func.count(col(Message.id))).where(
                    Message.conversation_id == conversation_id
                )
            ).one()
        messages = tuple(message_view(m) for m in reversed(newest))
        return _view(conversation, count, messages)


def update_conversation(
    ws: Workspace,
    conversation_id: int,
    *,
    title: str | None = None,
    system_prompt: str | None = None,
    params: dict[str, Any] | None = None,
) -> bool:
    """Change what is given and touch the updated time; False if the conversation is gone."""
    with ws.session() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            return False
        if title is not None:
            conversation.title = title_from(title) or conversation.title
        if system_prompt is not None:
            conversation.system_prompt = system_prompt
        if params is not None:
            conversation.params = dict(params)
        conversation.updated_at = utcnow()
        session.add(conversation)
    return True


@dataclass(frozen=True)
class TurnStart:
    conversation_id: int
    past: tuple[MessageView, ...]  # the conversation's messages before this prompt
    prompt: MessageView  # the prompt, saved


def begin_turn(
    ws: Workspace,
    conversation_id: int | None,
    prompt: str,
    *,
    lane: int = 0,
    model_id: int | None = None,
    model_name: str = "",
    system_prompt: str,
    params: dict[str, Any],
    turn: int | None = None,
) -> TurnStart:
    """Everything a turn does before its request, in one transaction: the conversation
    (created when None or deleted meanwhile; a chat is given the turn's settings), its
    messages so far, the prompt's turn number (the next one unless given) and the prompt
    itself, saved."""
    with ws.session() as session:
        conversation = session.get(Conversation, conversation_id) if conversation_id else None
        if conversation is None:
            conversation = Conversation(title=title_from(prompt) or "New chat")
            rows: list[Message] = []
        else:
            rows = list(
                session.exec(
                    select(Message)
                    .where(Message.conversation_id == conversation.id)
                    .order_by(col(Message.id))
                ).all()
            )
        if conversation.mode == "chat":  # a compare run keeps its lanes' settings itself
            conversation.system_prompt = system_prompt
            conversation.params = dict(params)
        conversation.updated_at = utcnow()
        session.add(conversation)
        session.flush()
        if turn is None:
            turns = [m.turn for m in rows if m.role == "user"]
            turn = max(turns) + 1 if turns else 0
        message = Message(
            conversation_id=conversation.id or 0,
            role="user",
            content=prompt,
            lane=lane,
            turn=turn,
            model_id=model_id,
            model_name=model_name,
        )
        session.add(message)
        session.flush()
        return TurnStart(
            conversation.id or 0, tuple(message_view(m) for m in rows), message_view(message)
        )


def delete_conversation(ws: Workspace, conversation_id: int) -> None:
    with ws.session() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is not None:
            session.delete(conversation)


def add_message(ws: Workspace, conversation_id: int, message: Message) -> MessageView:
    """Append a message (committed at once) and touch the conversation's updated time."""
    message.conversation_id = conversation_id
    with ws.session() as session:
        session.add(message)
        conversation = session.get(Conversation, conversation_id)
        if conversation is not None:
            conversation.updated_at = utcnow()
            session.add(conversation)
        session.flush()
        return message_view(message)


def delete_messages(ws: Workspace, message_ids: list[int]) -> None:
    """Remove messages (Retry replaces a failed prompt and its error with a fresh attempt)."""
    with ws.session() as session:
        for message_id in message_ids:
            message = session.get(Message, message_id)
            if message is not None:
                session.delete(message)


def next_turn(ws: Workspace, conversation_id: int) -> int:
    """The number the next prompt of this conversation gets (0 for the first)."""
    with ws.session() as session:
        last = session.exec(
            select(func.max(Message.turn)).where(
                Message.conversation_id == conversation_id, Message.role == "user"
            )
        ).one()
    return 0 if last is None else int(last) + 1
