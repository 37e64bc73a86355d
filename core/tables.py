"""SQLModel tables. The schema itself is owned by the Alembic migrations in core/migrations.

Times are timezone-aware UTC (SQLModel's UTCDateTime: SQLite stores them without an offset
and they come back as UTC; PostgreSQL uses timestamptz).
Rows refer to each other by id only; deletes cascade in the database (foreign keys on).
No `from __future__ import annotations` here: SQLModel reads the annotations at runtime.
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(default: Any) -> Any:
    factory = dict if isinstance(default, dict) else list
    return Field(default_factory=factory, sa_column=Column(JSON, nullable=False))


def _text(nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(Text, nullable=True))
    return Field(default="", sa_column=Column(Text, nullable=False))


class AppState(SQLModel, table=True):
    """Small key/value flags, e.g. that the first-run defaults were created once."""

    __tablename__ = "app_state"
    key: str = Field(primary_key=True, max_length=100)
    value: str = Field(default="", max_length=2000)


class Provider(SQLModel, table=True):
    """A connection: where to send requests and how to authenticate."""

    __tablename__ = "provider"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=40, index=True)
    base_url: str = Field(default="", max_length=2000)
    auth_type: str = Field(default="none", max_length=20)  # none | bearer | api_key
    auth_header: str = Field(default="Authorization", max_length=200)
    auth_prefix: str = Field(default="", max_length=100)
    secret_token: str | None = _text(nullable=True)  # Fernet token, never the plaintext
    extra_headers: dict[str, str] = _json({})
    settings: dict[str, Any] = _json({})  # kind-specific: JSONata, chat template, model path…
    connect_timeout: float | None = None
    read_timeout: float | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ModelTemplate(SQLModel, table=True):
    """A person's model template: fixed connection settings plus the schemas of what a model
    made from it asks for at creation (creation_schema) and accepts per request
    (request_schema). JSON Schema draft 2020-12; see core/templates.py. Never holds a secret.
    """

    __tablename__ = "model_template"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    description: str = _text()
    kind: str = Field(max_length=40)
    fixed: dict[str, Any] = _json({})  # base URL or pattern, auth, headers, kind settings…
    creation_schema: dict[str, Any] = _json({})
    request_schema: dict[str, Any] = _json({})
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ModelCard(SQLModel, table=True):
    """What a person picks in the Sandbox: a remote model behind a provider, with defaults."""

    __tablename__ = "model_card"
    id: int | None = Field(default=None, primary_key=True)
    provider_id: int = Field(foreign_key="provider.id", ondelete="CASCADE", index=True)
    display_name: str = Field(max_length=200, unique=True)
    remote_model: str = Field(default="", max_length=500)
    description: str = _text()
    tags: list[str] = _json([])
    context_length: int | None = None
    default_params: dict[str, Any] = _json({})
    enabled: bool = True
    last_test_ok: bool | None = None
    last_test_at: datetime | None = None
    last_test_summary: str = Field(default="", max_length=2000)
    # The template the card was made from: a person's (template_id) or a built-in (name only).
    # The name stays when that template is deleted.
    template_id: int | None = Field(
        default=None, foreign_key="model_template.id", ondelete="SET NULL", index=True
    )
    template_name: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Conversation(SQLModel, table=True):
    """A Sandbox session. A compare run is one conversation whose messages carry lanes."""

    __tablename__ = "conversation"
    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(default="", max_length=300)
    mode: str = Field(default="chat", max_length=20)  # chat | compare
    system_prompt: str = _text()
    params: dict[str, Any] = _json({})
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class Message(SQLModel, table=True):
    __tablename__ = "message"
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", ondelete="CASCADE", index=True)
    lane: int = 0  # compare runs: which lane (model) the message belongs to
    turn: int = 0  # the prompt's number in its conversation; a compare turn spans every lane
    role: str = Field(max_length=20)  # system | user | assistant
    content: str = _text()
    model_id: int | None = Field(
        default=None, foreign_key="model_card.id", ondelete="SET NULL", index=True
    )
    model_name: str = Field(default="", max_length=200)  # kept when the card is deleted
    status: str = Field(default="ok", max_length=20)  # ok | error | stopped
    finish_reason: str | None = Field(default=None, max_length=40)
    error_kind: str | None = Field(default=None, max_length=40)
    error_message: str | None = _text(nullable=True)
    error_detail: str | None = _text(nullable=True)
    ttft_ms: float | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_estimated: bool = False
    params: dict[str, Any] = _json({})
    # What some servers return beside the text: token log-probabilities, seed, alternatives.
    details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class UsageEvent(SQLModel, table=True):
    """One row per request sent to a model, successful or not."""

    __tablename__ = "usage_event"
    # The Usage page reads a time window for some models or providers (core/usage.py); the
    # (model_id, created_at) index also serves lookups by model_id alone (migration 0004).
    __table_args__ = (
        Index("ix_usage_event_model_id_created_at", "model_id", "created_at"),
        Index("ix_usage_event_provider_id_created_at", "provider_id", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    model_id: int | None = Field(default=None, foreign_key="model_card.id", ondelete="SET NULL")
    model_name: str = Field(default="", max_length=200)
    provider_id: int | None = Field(default=None, foreign_key="provider.id", ondelete="SET NULL")
    provider_name: str = Field(default="", max_length=200)
    kind: str = Field(default="", max_length=40)
    status: str = Field(default="ok", max_length=20)  # ok | error | stopped
    error_kind: str | None = Field(default=None, max_length=40)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_estimated: bool = False
    ttft_ms: float | None = None
    latency_ms: float | None = None


class Vote(SQLModel, table=True):
    """A person's judgement: which lane of a compare turn was better, or 👍/👎 on a reply."""

    __tablename__ = "vote"
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", ondelete="CASCADE", index=True)
    turn: int = 0
    kind: str = Field(max_length=20)  # preference | rating
    # preference: a lane letter ("A"…"F"), "tie" or "all_bad"; rating: "up" or "down"
    choice: str = Field(max_length=20)
    message_id: int | None = Field(
        default=None, foreign_key="message.id", ondelete="CASCADE", index=True
    )
    created_at: datetime = Field(default_factory=utcnow)
