"""Egress rules are checked when a model is saved and when a request is sent."""

from __future__ import annotations

import pytest

from core import catalog
from core.catalog import ModelDraft, ProviderDraft, ValidationFailed
from core.chat import TurnRequest, collect, stream_turn
from core.egress import EgressPolicy
from core.inference.openai_compat import OpenAICompatAdapter
from core.inference.registry import kinds, make_adapter
from core.inference.target import Target
from core.inference.types import Blocked, GenerationParams, Message


def draft(url: str) -> tuple[ProviderDraft, ModelDraft]:
    return (
        ProviderDraft(name="metadata", kind="openai_compat", base_url=url, auth_type="none"),
        ModelDraft(display_name="Sneaky", remote_model="m"),
    )


def test_saving_a_card_for_a_metadata_address_is_refused_on_a_shared_server(make_workspace):
    ws = make_workspace(PLUGBOARD_SHARED="1")
    with pytest.raises(ValidationFailed) as err:
        catalog.add_custom_model(ws, *draft("http://169.254.169.254/latest"))
    assert "not allowed on this Plugboard" in err.value.errors["base_url"]


def test_the_same_card_is_fine_on_a_single_user_install(make_workspace):
    ws = make_workspace()
    assert catalog.add_custom_model(ws, *draft("http://169.254.169.254/latest")).id


def test_requests_are_checked_when_sent(make_workspace, openai_server):
    """A card saved before the rules were set is stopped at send time, nothing goes out."""
    open_ws = make_workspace()
    card = catalog.add_custom_model(
        open_ws,
        ProviderDraft(
            name="local", kind="openai_compat", base_url=openai_server.url, auth_type="none"
        ),
        ModelDraft(display_name="Echo", remote_model="test-model"),
    )
    strict_ws = make_workspace(open_ws.settings.database_url, PLUGBOARD_DENIED_HOSTS="127.0.0.0/8")
    result = collect(stream_turn(strict_ws, TurnRequest(card.id, "hello")))
    assert result.status == "error" and result.error and result.error.kind == "blocked"
    assert "127.0.0.1 is in the blocked network 127.0.0.0/8" in result.error.message
    assert openai_server.requests == []


def test_the_adapter_refuses_before_connecting(openai_server):
    target = Target(
        kind="openai_compat",
        base_url=openai_server.url,
        model="test-model",
        egress=EgressPolicy.build(allow=["api.example.com"]),
    )
    with pytest.raises(Blocked):
        list(OpenAICompatAdapter(target).stream_chat([Message("user", "hi")], GenerationParams()))
    assert openai_server.requests == []


REMOTE_KINDS = [kind for kind, spec in kinds().items() if kind != "local_gguf"]


@pytest.mark.parametrize("kind", REMOTE_KINDS)
def test_every_remote_kind_checks_the_rules_before_connecting(kind):
    """Port 9 on loopback refuses connections: a Blocked error (not "refused") proves the
    rule was applied before anything left — for every adapter, not just OpenAI's."""
    target = Target(
        kind=kind,
        base_url="http://127.0.0.1:9/v1",
        model="m",
        egress=EgressPolicy.build(deny=["127.0.0.0/8"]),
    )
    with pytest.raises(Blocked) as err:
        list(make_adapter(target).stream_chat([Message("user", "hi")], GenerationParams()))
    assert "127.0.0.0/8" in err.value.message
