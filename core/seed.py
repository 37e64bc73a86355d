"""First run: a fresh database gets the bundled local model, so the Sandbox works offline.

Done once per database (a flag in app_state): if a person deletes the card, it stays deleted.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.inference.local_gguf import BUNDLED, BUNDLED_LABEL, DEFAULT_CONTEXT
from core.tables import AppState, ModelCard, Provider

FLAG = "defaults_created"
LOCAL_PROVIDER = "Local models"
log = logging.getLogger("plugboard.seed")


def ensure_defaults(session: Session) -> bool:
    """Create the bundled provider and card if this database never had them. True if created."""
    if session.get(AppState, FLAG) is not None:
        return False
    try:
        add_bundled(session)
        session.add(AppState(key=FLAG, value="1"))
        session.flush()
    except IntegrityError:  # another process seeded at the same moment
        session.rollback()
        return False
    log.info("created the bundled local model card")
    return True


def has_bundled(session: Session) -> bool:
    return (
        session.exec(
            select(ModelCard.id)
            .join(Provider, col(Provider.id) == col(ModelCard.provider_id))
            .where(Provider.kind == "local_gguf", Provider.base_url == BUNDLED)
        ).first()
        is not None
    )


def _free_name(
    session: Session, table: type[Provider] | type[ModelCard], column: str, name: str
) -> str:
    taken = {n.lower() for n in session.exec(select(getattr(table, column))).all()}
    candidate, n = name, 2
    while candidate.lower() in taken:
        candidate, n = f"{name} ({n})", n + 1
    return candidate


def add_bundled(session: Session) -> ModelCard:
    """The bundled Gemma card and its connection (also: Manage providers → add it again)."""
    provider = Provider(
        name=_free_name(session, Provider, "name", LOCAL_PROVIDER),
        kind="local_gguf",
        base_url=BUNDLED,
        auth_type="none",
        settings={"chat_template": "plain"},
    )
    session.add(provider)
    session.flush()
    card = ModelCard(
        provider_id=provider.id,  # type: ignore[arg-type]
        display_name=_free_name(session, ModelCard, "display_name", BUNDLED_LABEL),
        remote_model="gemma-3-270m",
        description="Google's smallest Gemma 3 (270M parameters, Q4_K_M), bundled with "
        "Plugboard and run on this machine by llama.cpp. Quick, offline, and modest: "
        "good for trying the Sandbox, not for hard questions.",
        tags=["local", "offline", "bundled"],
        context_length=DEFAULT_CONTEXT,
        default_params={"temperature": 0.7, "max_tokens": 256},
    )
    session.add(card)
    session.flush()
    return card
