"""Model templates on a real database, and a model made from each built-in template answering
against the test server of its protocol on 127.0.0.1 (the bundled GGUF file for the local
one); creation values checked in plain words; a person's templates created, edited, exported
(never with a secret), imported and deleted."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlmodel import select

from core import catalog, templates
from core.catalog import CardView, NotFoundInCatalog, ValidationFailed
from core.chat import TurnRequest, collect, stream_turn
from core.inference.custom_api import PRESETS
from core.inference.local_gguf import BUNDLED
from core.tables import ModelCard
from core.templates import TemplateDefinition
from core.workspace import Workspace
from tests.servers.custom_api_server import CustomAPITestServer
from tests.servers.openai_server import OpenAITestServer
from tests.servers.tgi_server import DEFAULT_REPLY, TGITestServer

KEY = "sk-template-test-0123456789abcdef"
TOKEN = "dapi-template-0123456789abcdef"
MakeWorkspace = Callable[..., Workspace]


def failed(call: Callable[[], object]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        call()
    return caught.value.errors


def ask(ws: Workspace, card: CardView, prompt: str = "hello templates", **params: Any) -> str:
    result = collect(stream_turn(ws, TurnRequest(card.id, prompt, params=params)))
    assert result.status == "ok", result.error
    return result.text


@pytest.fixture(scope="module")
def _tgi() -> Iterator[TGITestServer]:
    server = TGITestServer().start()
    yield server
    server.stop()


@pytest.fixture
def tgi(_tgi: TGITestServer) -> Iterator[TGITestServer]:
    _tgi.reset()
    yield _tgi
    _tgi.reset()


@pytest.fixture(scope="module")
def _custom() -> Iterator[CustomAPITestServer]:
    server = CustomAPITestServer(token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def custom(_custom: CustomAPITestServer) -> Iterator[CustomAPITestServer]:
    _custom.reset()
    yield _custom
    _custom.reset()


# --- each built-in template, against its server -----------------------------------------------


def test_openai_template_with_the_test_servers_url(
    workspace: Workspace, openai_server: OpenAITestServer
) -> None:
    openai_server.api_key = KEY
    card = templates.create_model_from_template(
        workspace,
        "openai",
        {"api_key": KEY, "model": "test-model", "base_url": openai_server.url},
    )
    assert (card.display_name, card.remote_model, card.kind) == (
        "test-model",
        "test-model",
        "openai_compat",
    )
    assert card.provider.auth_type == "bearer" and card.provider.masked_key == "sk-…cdef"
    assert card.template_name == "OpenAI" and card.template_id is None
    assert card.tags == ["openai"]
    assert ask(workspace, card) == "Echo: hello templates"
    sent = openai_server.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json()["model"] == "test-model"


def test_openai_template_defaults_to_the_real_api(workspace: Workspace) -> None:
    card = templates.create_model_from_template(workspace, "OpenAI", {"api_key": KEY})
    assert card.provider.base_url == "https://api.openai.com/v1"
    assert card.remote_model == "gpt-4o-mini"  # the schema's default


@pytest.mark.parametrize(
    ("template", "values", "name", "auth"),
    [
        ("together", {"api_key": KEY}, "test-model (Together)", f"Bearer {KEY}"),
        ("vllm", {}, "test-model (vLLM)", None),
        ("vllm", {"api_key": KEY}, "test-model (vLLM)", f"Bearer {KEY}"),
        ("ollama", {}, "test-model (Ollama)", None),
    ],
)
def test_openai_compatible_templates_answer(
    workspace: Workspace,
    openai_server: OpenAITestServer,
    template: str,
    values: dict[str, Any],
    name: str,
    auth: str | None,
) -> None:
    card = templates.create_model_from_template(
        workspace, template, {**values, "model": "test-model", "base_url": openai_server.url}
    )
    assert card.display_name == name and card.provider.base_url == openai_server.url
    assert card.provider.auth_type == ("bearer" if auth else "none")
    assert ask(workspace, card) == "Echo: hello templates"
    assert openai_server.requests[-1].headers.get("authorization") == auth


def test_ollama_template_defaults(workspace: Workspace) -> None:
    card = templates.create_model_from_template(workspace, "ollama", {})
    assert card.provider.base_url == "http://localhost:11434/v1"
    assert (card.remote_model, card.provider.auth_type, card.provider.has_key) == (
        "llama3.2",
        "none",
        False,
    )


def test_databricks_template_reaches_the_serving_endpoint(
    workspace: Workspace, custom: CustomAPITestServer
) -> None:
    card = templates.create_model_from_template(
        workspace,
        "databricks",
        {
            "workspace_url": custom.url + "/",
            "endpoint": "databricks-dbrx-instruct",
            "api_key": TOKEN,
        },
    )
    assert card.provider.base_url == (
        f"{custom.url}/serving-endpoints/databricks-dbrx-instruct/invocations"
    )
    assert card.provider.settings["request_expression"] == PRESETS["databricks"].request_expression
    assert card.display_name == "databricks-dbrx-instruct (Databricks)"
    assert card.default_params == {"max_tokens": 512}
    assert ask(workspace, card, temperature=0.1) == "Echo: hello templates"
    [sent] = custom.requests_to("/serving-endpoints/databricks-dbrx-instruct/invocations")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.json()["max_tokens"] == 512 and sent.json()["temperature"] == 0.1


def test_hugging_face_tgi_template(workspace: Workspace, tgi: TGITestServer) -> None:
    card = templates.create_model_from_template(
        workspace, "hf_tgi", {"base_url": tgi.url, "chat_template": "llama3"}
    )
    host = tgi.url.removeprefix("http://")
    assert card.display_name == f"TGI at {host}" and card.kind == "tgi"
    assert card.provider.settings == {"chat_template": "llama3"}
    assert card.provider.auth_type == "none"  # the token is optional
    assert ask(workspace, card) == DEFAULT_REPLY
    sent = tgi.requests[-1].json()
    assert (
        sent["inputs"].startswith("<|start_header_id|>user") and "hello templates" in sent["inputs"]
    )


def test_datacrunch_template_needs_the_model_and_sends_it(
    workspace: Workspace, tgi: TGITestServer
) -> None:
    errors = failed(
        lambda: templates.create_model_from_template(
            workspace, "datacrunch", {"api_key": KEY, "base_url": tgi.url}
        )
    )
    assert errors == {"model": "Model is required."}
    tgi.api_key = KEY
    card = templates.create_model_from_template(
        workspace,
        "datacrunch",
        {"api_key": KEY, "model": "llama-2-13b-chat", "base_url": tgi.url},
    )
    assert card.display_name == "llama-2-13b-chat (DataCrunch)"
    assert card.provider.settings == {"chat_template": "llama2"}
    assert ask(workspace, card) == DEFAULT_REPLY
    request = tgi.requests[-1]
    assert request.json()["model"] == "llama-2-13b-chat"
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_datacrunch_template_defaults_to_datacrunch(workspace: Workspace) -> None:
    card = templates.create_model_from_template(
        workspace, "datacrunch", {"api_key": KEY, "model": "mixtral-8x7b"}
    )
    assert card.provider.base_url == "https://inference.datacrunch.io/v1/completions"


def test_local_gguf_template_runs_the_bundled_model(workspace: Workspace) -> None:
    card = templates.create_model_from_template(
        workspace, "local_gguf", {"display_name": "Tiny Gemma", "model_file": BUNDLED}
    )
    assert (card.provider.base_url, card.kind, card.context_length) == (
        BUNDLED,
        "local_gguf",
        2048,
    )
    assert card.default_params == {"max_tokens": 256}
    assert ask(workspace, card, "What is the capital of Italy?", max_tokens=8, temperature=0)


def test_local_gguf_template_needs_an_existing_file(workspace: Workspace, tmp_path) -> None:
    errors = failed(
        lambda: templates.create_model_from_template(
            workspace,
            "local_gguf",
            {"display_name": "Nope", "model_file": str(tmp_path / "missing.gguf")},
        )
    )
    # The catalog's own rule, shown under the creation parameter that made the path.
    assert errors == {"model_file": f"There is no file at {tmp_path / 'missing.gguf'}."}


def test_xinference_template(workspace: Workspace) -> None:
    pytest.importorskip("tests.servers.xinference_server")
    from tests.servers.xinference_server import XinferenceTestServer

    server = XinferenceTestServer().start()
    try:
        uid = server.launch_ready("qwen2.5-instruct")
        card = templates.create_model_from_template(
            workspace, "xinference", {"base_url": server.url, "model": uid}
        )
        target = catalog.target_for(workspace, card.id)
        assert (target.kind, target.base_url, target.model) == ("xinference", server.url, uid)
        assert target.auth.type == "none"
        assert card.display_name == f"{uid} (Xinference)"
        assert ask(workspace, card) == "Echo: hello templates"
    finally:
        server.stop()


def test_xinference_template_defaults(workspace: Workspace) -> None:
    card = templates.create_model_from_template(workspace, "xinference", {"model": "qwen"})
    target = catalog.target_for(workspace, card.id)
    assert (target.kind, target.base_url, target.model) == (
        "xinference",
        "http://localhost:9997",
        "qwen",
    )


# --- every normal rule still applies ----------------------------------------------------------


def test_values_are_checked_against_the_schema_first(workspace: Workspace) -> None:
    errors = failed(
        lambda: templates.create_model_from_template(
            workspace,
            "databricks",
            {"workspace_url": "adb-1.azuredatabricks.net", "endpoint": "my endpoint"},
        )
    )
    assert errors == {
        "api_key": "Access token is required.",
        "workspace_url": "Workspace URL: The URL must start with http:// or https://.",
        "endpoint": "Serving endpoint name does not have the expected form "
        "(letters, digits, - and _ only, as on the Serving page).",
    }
    assert [c.display_name for c in catalog.list_cards(workspace)] == ["Gemma 3 270M (local)"]


def test_catalog_rules_are_shown_under_the_parameter_responsible(
    make_workspace: MakeWorkspace,
) -> None:
    ws = make_workspace(PLUGBOARD_DENIED_HOSTS="*.azuredatabricks.net")
    errors = failed(
        lambda: templates.create_model_from_template(
            ws,
            "databricks",
            {
                "workspace_url": "https://adb-1.azuredatabricks.net",
                "endpoint": "dbrx",
                "api_key": TOKEN,
            },
        )
    )
    assert (
        list(errors) == ["workspace_url"] and "adb-1.azuredatabricks.net" in errors["workspace_url"]
    )


def test_a_typed_display_name_must_be_free_a_made_one_is_made_free(workspace: Workspace) -> None:
    first = templates.create_model_from_template(workspace, "ollama", {"model": "phi3"})
    second = templates.create_model_from_template(workspace, "ollama", {"model": "phi3"})
    assert (first.display_name, second.display_name) == ("phi3 (Ollama)", "phi3 (Ollama) (2)")
    assert first.provider.name != second.provider.name
    errors = failed(
        lambda: templates.create_model_from_template(
            workspace, "ollama", {"model": "phi3", "display_name": "PHI3 (ollama)"}
        )
    )
    assert errors == {
        "display_name": "A model named 'PHI3 (ollama)' already exists; pick another name."
    }


def test_unknown_template(workspace: Workspace) -> None:
    with pytest.raises(NotFoundInCatalog, match="There is no template 'nope'"):
        templates.create_model_from_template(workspace, "nope", {})
    with pytest.raises(NotFoundInCatalog):
        templates.create_model_from_template(workspace, 424242, {})


# --- a person's templates ---------------------------------------------------------------------


def acme(base_url: str, name: str = "Acme chat") -> TemplateDefinition:
    return TemplateDefinition(
        name=name,
        kind="openai_compat",
        description="Our gateway.",
        fixed={
            "base_url": base_url,
            "auth_type": "bearer",
            "display_name": "{model} via Acme",
            "extra_headers": {"X-Team": "{team}"},
            "tags": ["acme"],
        },
        creation_schema={
            "type": "object",
            "required": ["api_key", "model", "team"],
            "properties": {
                "api_key": {"type": "string", "format": "password"},
                "model": {"type": "string", "enum": ["test-model", "echo-1"]},
                "team": {"type": "string", "default": "research"},
            },
        },
        request_schema={
            "type": "object",
            "properties": {
                "temperature": {"type": "number", "maximum": 1, "default": 0.3},
                "max_tokens": {"type": "integer", "maximum": 256, "default": 64},
            },
        },
    )


def test_crud_and_link_on_sqlite_and_postgres(
    make_workspace: MakeWorkspace, database_url: str
) -> None:
    ws = make_workspace(database_url)
    mine = templates.create_template(ws, acme("http://127.0.0.1:9/v1"))
    assert mine.id and not mine.is_builtin and mine.ref == mine.id
    listed = templates.list_templates(ws)
    assert [t.name for t in listed][-1] == "Acme chat"
    assert [t.builtin for t in listed][:3] == ["openai", "together", "databricks"]

    card = templates.create_model_from_template(ws, mine.id, {"api_key": KEY, "model": "echo-1"})
    assert (card.template_id, card.template_name) == (mine.id, "Acme chat")
    assert card.display_name == "echo-1 via Acme"
    assert card.provider.extra_headers == {"X-Team": "research"}
    assert card.default_params == {"temperature": 0.3, "max_tokens": 64}
    assert templates.get_template(ws, "acme CHAT").card_count == 1

    # Renamed: the card follows. Edited: the card keeps its settings.
    changed = acme("http://127.0.0.1:10/v1", name="Acme gateway")
    templates.update_template(ws, mine.id, changed)
    again = catalog.get_card(ws, card.id)
    assert again.template_name == "Acme gateway" and again.provider.base_url.endswith(":9/v1")
    # Editing the card keeps its link.
    catalog.update_model(ws, card.id, catalog.model_draft(again))
    edited = catalog.update_model(
        ws, card.id, catalog.ModelDraft(display_name="Renamed", remote_model="echo-1")
    )
    assert (edited.template_id, edited.template_name) == (mine.id, "Acme gateway")

    # Deleted: the card stays, with the template's name and no link.
    templates.delete_template(ws, mine.id)
    gone = catalog.get_card(ws, card.id)
    assert (gone.template_id, gone.template_name) == (None, "Acme gateway")
    with ws.session() as session:
        assert session.exec(select(ModelCard.template_id)).all() == [None, None]
    with pytest.raises(NotFoundInCatalog):
        templates.get_template(ws, mine.id)


def test_builtin_cards_are_counted(workspace: Workspace) -> None:
    templates.create_model_from_template(workspace, "ollama", {"model": "a"})
    templates.create_model_from_template(workspace, "ollama", {"model": "b"})
    counts = {t.builtin: t.card_count for t in templates.list_templates(workspace)}
    assert counts["ollama"] == 2 and counts["openai"] == 0


def test_names_are_unique_and_builtin_names_reserved(workspace: Workspace) -> None:
    templates.create_template(workspace, acme("http://127.0.0.1:9/v1"))
    assert failed(
        lambda: templates.create_template(workspace, acme("http://x/v1", "ACME CHAT"))
    ) == {"name": "A template named “ACME CHAT” already exists."}
    assert (
        "built-in template"
        in failed(lambda: templates.create_template(workspace, acme("http://x/v1", "vLLM")))["name"]
    )


def test_copy_of_a_builtin_is_editable(workspace: Workspace) -> None:
    copy = templates.copy_template(workspace, "databricks")
    assert copy.name == "Databricks serving endpoint (copy)" and copy.id
    assert copy.fixed == templates.builtins()["databricks"].fixed
    second = templates.copy_template(workspace, "databricks")
    assert second.name == "Databricks serving endpoint (copy) (2)"


def test_export_import_round_trip_without_the_secret(
    make_workspace: MakeWorkspace, openai_server: OpenAITestServer
) -> None:
    here = make_workspace()
    mine = templates.create_template(here, acme(openai_server.url))
    card = templates.create_model_from_template(
        here, mine.id, {"api_key": KEY, "model": "test-model", "team": "ml"}
    )
    assert catalog.target_for(here, card.id).auth.secret == KEY

    text = templates.export_template(templates.get_template(here, mine.id))
    assert KEY not in text and KEY[-8:] not in text
    assert json.loads(text)["plugboard_template"] == 1
    exported = json.loads(text)["creation_schema"]["properties"]["api_key"]
    assert exported == {"type": "string", "format": "password"}

    there = make_workspace()
    imported = templates.import_template(there, text)
    assert imported.definition().to_dict() == mine.definition().to_dict()
    made = templates.create_model_from_template(
        there, imported.id or 0, {"api_key": KEY, "model": "test-model"}
    )
    assert ask(there, made) == "Echo: hello templates"
    sent = openai_server.requests[-1]
    assert sent.headers["x-team"] == "research"
    assert sent.json()["max_tokens"] == 64 and sent.json()["temperature"] == 0.3


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda d: d.update(kind="teleport"), "kind", "Unknown connection kind 'teleport'"),
        (
            lambda d: d["creation_schema"].update(type="array"),
            "creation_schema",
            'The schema\'s type must be "object"',
        ),
        (
            lambda d: d["creation_schema"]["properties"].update(limits={"type": "object"}),
            "creation_schema.limits",
            "is an object",
        ),
        (
            lambda d: d["request_schema"]["properties"].update(temperature={"maximum": 5}),
            "request_schema.temperature",
            "can only be narrowed",
        ),
        (
            lambda d: d["fixed"].update(extra_headers={"Authorization": "Bearer " + KEY}),
            "fixed.extra_headers",
            "would keep a credential",
        ),
        (lambda d: d.update(name="Ollama"), "name", "A built-in template is called “Ollama”"),
    ],
)
def test_bad_imports_say_what_is_wrong_and_store_nothing(
    workspace: Workspace, change: Any, field: str, message: str
) -> None:
    data = json.loads(templates.export_template(acme("http://127.0.0.1:9/v1")))
    change(data)
    errors = failed(lambda: templates.import_template(workspace, json.dumps(data)))
    assert message in errors.get(field, ""), errors
    assert [t for t in templates.list_templates(workspace) if not t.is_builtin] == []


def test_import_of_something_that_is_not_a_template(workspace: Workspace) -> None:
    assert failed(lambda: templates.import_template(workspace, "name: yaml?"))["json"].startswith(
        "This is not valid JSON"
    )
    assert (
        "Unknown field(s): id, model_creation_parameters_schema"
        in failed(
            lambda: templates.import_template(
                workspace,
                '{"id": 3, "name": "egp", "kind": "tgi", "model_creation_parameters_schema": {}}',
            )
        )["json"]
    )


def test_update_checks_like_create(workspace: Workspace) -> None:
    mine = templates.create_template(workspace, acme("http://127.0.0.1:9/v1"))
    broken = acme("http://127.0.0.1:9/v1")
    broken.fixed["base_url"] = "http://{nowhere}/v1"
    errors = failed(lambda: templates.update_template(workspace, mine.id or 0, broken))
    assert errors["fixed.base_url"].startswith("{nowhere} is not a creation parameter")
    assert templates.get_template(workspace, mine.id or 0).fixed["base_url"].endswith(":9/v1")
    with pytest.raises(NotFoundInCatalog):
        templates.update_template(workspace, 999, acme("http://x/v1"))
    with pytest.raises(NotFoundInCatalog):
        templates.delete_template(workspace, 999)


def test_a_templates_request_schema_shapes_and_checks_each_turn(
    workspace: Workspace, openai_server: OpenAITestServer
) -> None:
    """The Sandbox offers only the schema's parameters, with its bounds; a turn outside them
    is refused in plain words before anything is sent, and other parameters are not sent."""
    mine = templates.create_template(workspace, acme(openai_server.url))
    card = templates.create_model_from_template(
        workspace, mine.id, {"api_key": KEY, "model": "test-model"}
    )
    offered = {p.name: p for p in templates.card_params(workspace, card)}
    assert list(offered) == ["temperature", "max_tokens"]
    assert offered["temperature"].maximum == 1 and offered["max_tokens"].maximum == 256

    result = collect(
        stream_turn(workspace, TurnRequest(card.id, "hot", params={"temperature": 1.5}))
    )
    assert result.status == "error" and result.error is not None
    assert "Check the settings" in result.error.message and "1" in result.error.message
    assert openai_server.requests == []

    ask(workspace, card, temperature=0.9, top_p=0.5)
    (sent,) = [r.json() for r in openai_server.requests if r.path.endswith("/chat/completions")]
    assert sent["temperature"] == 0.9 and sent["max_tokens"] == 64 and "top_p" not in sent

    # Its template deleted, the card offers its kind's parameters again.
    templates.delete_template(workspace, mine.id)
    again = catalog.get_card(workspace, card.id)
    assert "top_p" in {p.name for p in templates.card_params(workspace, again)}
