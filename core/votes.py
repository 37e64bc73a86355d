"""Votes: which lane of a compare turn was better, and 👍/👎 on single replies."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, delete, select

from core.compare import LETTERS
from core.tables import Message, Vote
from core.workspace import Workspace

PREFERENCE_CHOICES = (*LETTERS, "tie", "all_bad")
RATINGS = ("up", "down")


@dataclass(frozen=True)
class ConversationVotes:
    preferences: dict[int, str]  # turn -> "A"… / "tie" / "all_bad"
    ratings: dict[int, str]  # message id -> "up" / "down"


def set_preference(ws: Workspace, conversation_id: int, turn: int, choice: str | None) -> None:
    """Record (or with None, clear) the better reply of a compare turn."""
    if choice is not None and choice not in PREFERENCE_CHOICES:
        raise ValueError(f"Unknown choice {choice!r}")
    with ws.session() as session:
        session.exec(
            delete(Vote).where(
                col(Vote.conversation_id) == conversation_id,
                col(Vote.turn) == turn,
                col(Vote.kind) == "preference",
            )
        )
        if choice is not None:
            session.add(
                Vote(conversation_id=conversation_id, turn=turn, kind="preference", choice=choice)
            )


def set_rating(ws: Workspace, message_id: int, choice: str | None) -> None:
    """Thumbs up or down on one reply (None clears it)."""
    if choice is not None and choice not in RATINGS:
        raise ValueError(f"Unknown rating {choice!r}")
    with ws.session() as session:
        message = session.get(Message, message_id)
        if message is None:
            return
        session.exec(
            delete(Vote).where(col(Vote.message_id) == message_id, col(Vote.kind) == "rating")
        )
        if choice is not None:
            session.add(
                Vote(
                    conversation_id=message.conversation_id,
                    turn=message.turn,
                    kind="rating",
                    choice=choice,
                    message_id=message_id,
                )
            )


def votes_for(ws: Workspace, conversation_id: int) -> ConversationVotes:
    with ws.session() as session:
        rows = session.exec(select(Vote).where(Vote.conversation_id == conversation_id)).all()
    return ConversationVotes(
        preferences={v.turn: v.choice for v in rows if v.kind == "preference"},
        ratings={v.message_id: v.choice for v in rows if v.kind == "rating" and v.message_id},
    )
