"""Small builders shared by the storage, catalog, secrets, chat and CLI tests."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from core import catalog
from core.catalog import CardView, ModelDraft, ProviderDraft
from core.tables import Message, UsageEvent
from core.workspace import Workspace
from tests.servers.openai_server import OpenAITestServer


def openai_provider(
    server: OpenAITestServer | str,
    *,
    name: str = "Test server",
    api_key: str | None = None,
    **kw: Any,
) -> ProviderDraft:
    url = server if isinstance(server, str) else server.url
    return ProviderDraft(
        name=name,
        kind="openai_compat",
        base_url=url,
        auth_type="bearer" if api_key else "none",
        api_key=api_key,
        **kw,
    )


def add_openai_card(
    ws: Workspace,
    server: OpenAITestServer | str,
    *,
    display_name: str = "Echo model",
    remote_model: str = "test-model",
    api_key: str | None = None,
    provider_name: str | None = None,
    **model_kw: Any,
) -> CardView:
    """A connection to the test server and one card on it."""
    return catalog.add_custom_model(
        ws,
        openai_provider(server, name=provider_name or f"{display_name} server", api_key=api_key),
        ModelDraft(display_name=display_name, remote_model=remote_model, **model_kw),
    )


def usage_events(ws: Workspace) -> list[UsageEvent]:
    with ws.session() as session:
        return list(session.exec(select(UsageEvent).order_by(col(UsageEvent.id))).all())


def message_rows(ws: Workspace, conversation_id: int | None = None) -> list[Message]:
    with ws.session() as session:
        query = select(Message).order_by(col(Message.id))
        if conversation_id is not None:
            query = query.where(Message.conversation_id == conversation_id)
        return list(session.exec(query).all())
