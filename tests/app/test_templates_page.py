"""Manage providers → templates: a form drawn from a template's schema, its messages, Test
connection and Create model; the template list with export, import, edit, copy and delete."""

from __future__ import annotations

import json
from typing import Any

import pytest
from streamlit.runtime.memory_media_file_storage import _calculate_file_id

from core import catalog, templates
from core.templates import TemplateDefinition
from tests.app.conftest import App
from tests.servers.openai_server import OpenAITestServer

KEY = "sk-plugboard-templates-0123456789ab"

RICH = TemplateDefinition(
    name="Rich form",
    kind="openai_compat",
    description="Every kind of field.",
    fixed={
        "base_url": "{server}",
        "auth_type": "bearer",
        "display_name": "{model} rich",
        "extra_headers": {
            "X-Tier": "{tier}",
            "X-Replicas": "{replicas}",
            "X-Debug": "{debug}",
            "X-Ratio": "{ratio}",
        },
        "settings": {},
    },
    creation_schema={
        "type": "object",
        "required": ["server", "api_key", "model", "tier"],
        "properties": {
            "server": {"type": "string", "format": "uri", "title": "Server"},
            "api_key": {"type": "string", "format": "password"},
            "model": {"type": "string", "description": "The model to call."},
            "tier": {"type": "string", "enum": ["free", "pro"], "default": "pro"},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 4, "default": 2},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "debug": {"type": "boolean", "default": True},
        },
    },
    request_schema={
        "type": "object",
        "properties": {"temperature": {"type": "number", "maximum": 1, "default": 0.4}},
    },
)


def pick(app: App, ref: str | int) -> App:
    app.go("providers")
    app.selectbox("Template").select(str(ref)).run()
    app.assert_no_exception()
    return app


def form_key(ref: str | int, gen: int = 0) -> str:
    return f"tpl.{gen}.{ref}"


def press(app: App, ref: str | int, action: str, gen: int = 0) -> App:
    app.at.button(key=f"{form_key(ref, gen)}.{action}").click()
    return app.run()


def widget(app: App, kind: str, ref: str | int, name: str, gen: int = 0) -> Any:
    return getattr(app.at, kind)(key=f"{form_key(ref, gen)}.{name}")


# --- a form from a schema ---------------------------------------------------------------------


def test_the_form_is_drawn_from_the_schema(app: App, ws) -> None:
    rich = templates.create_template(ws, RICH)
    pick(app, rich.id)

    server = widget(app, "text_input", rich.id, "server")
    assert server.label == "Server *" and server.value == ""
    key = widget(app, "text_input", rich.id, "api_key")
    assert key.label == "API key *" and key.proto.type == key.proto.PASSWORD
    model = widget(app, "text_input", rich.id, "model")
    assert model.help == "The model to call."
    tier = widget(app, "selectbox", rich.id, "tier")
    assert (tier.label, tier.options, tier.value) == ("Tier *", ["free", "pro"], "pro")
    replicas = widget(app, "number_input", rich.id, "replicas")
    assert (replicas.label, replicas.value, replicas.min, replicas.max) == ("Replicas", 2, 1, 4)
    ratio = widget(app, "number_input", rich.id, "ratio")
    assert ratio.value is None and (ratio.min, ratio.max) == (0.0, 1.0)
    debug = widget(app, "checkbox", rich.id, "debug")
    assert debug.label == "Debug" and debug.value is True
    shown = app.everything()
    assert "\\* required" in shown
    assert "Settings a model made from it accepts: Temperature (≥ 0 and ≤ 1, default 0.4)." in shown


def test_validation_messages_appear_under_the_fields(app: App, ws) -> None:
    pick(app, "databricks")
    widget(app, "text_input", "databricks", "workspace_url").set_value("adb-1.net")
    widget(app, "text_input", "databricks", "endpoint").set_value("my endpoint")
    press(app, "databricks", "create")

    errors = app.errors
    assert "Workspace URL: The URL must start with http:// or https://." in errors
    assert any(
        e.startswith("Serving endpoint name does not have the expected form") for e in errors
    )
    assert "Access token is required." in errors
    assert [c.display_name for c in catalog.list_cards(ws)] == ["Gemma 3 270M (local)"]
    # What was typed stays.
    assert widget(app, "text_input", "databricks", "workspace_url").value == "adb-1.net"


def test_create_a_model_from_a_template(app: App, ws, openai_server: OpenAITestServer) -> None:
    pick(app, "ollama")
    widget(app, "text_input", "ollama", "model").set_value("test-model")
    widget(app, "text_input", "ollama", "base_url").set_value(openai_server.url)
    press(app, "ollama", "create")

    assert "Added “test-model (Ollama)” from the template “Ollama”." in app.toasts
    assert any("is ready" in s for s in app.texts("success"))
    card = catalog.find_card(ws, "test-model (Ollama)")
    assert card is not None and card.template_name == "Ollama"
    assert card.provider.base_url == openai_server.url and card.provider.auth_type == "none"
    # A fresh form for the next one.
    assert widget(app, "text_input", "ollama", "model", gen=1).value == "llama3.2"

    # Models → View details names the template.
    app.go("models").menu(card.id, "View details")
    assert "Made from the template “Ollama”" in app.everything()


def test_test_connection_then_create_marks_the_card(
    app: App, ws, openai_server: OpenAITestServer
) -> None:
    openai_server.api_key = KEY
    pick(app, "openai")
    widget(app, "text_input", "openai", "api_key").set_value(KEY)
    widget(app, "text_input", "openai", "model").set_value("test-model")
    widget(app, "text_input", "openai", "base_url").set_value(openai_server.url)
    press(app, "openai", "test")

    assert "The connection works." in app.texts("success")
    assert openai_server.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    press(app, "openai", "create")
    card = catalog.find_card(ws, "test-model")
    assert card is not None and card.last_test_ok is True
    assert card.provider.masked_key == "sk-…89ab"


def test_a_template_whose_kind_is_missing_says_so(app: App, ws, monkeypatch) -> None:
    from core.inference import registry

    specs = {k: v for k, v in registry.kinds().items() if k != "xinference"}
    monkeypatch.setattr(registry, "_SPECS", specs)
    pick(app, "xinference")
    assert any("needs the 'xinference' connection kind" in i for i in app.texts("info"))
    assert not [b for b in app.at.button if b.key == f"{form_key('xinference')}.create"]


# --- the list ---------------------------------------------------------------------------------


def test_export_serves_the_templates_json(app: App, ws) -> None:
    app.go("providers")
    button = app.at.download_button(key="tpl_export_openai")
    assert button.label == "Export"
    text = templates.export_template(templates.builtins()["openai"])
    file_id = _calculate_file_id(text.encode(), "application/json", "openai.template.json")
    assert button.proto.url.endswith(f"{file_id}.json")


def import_text(app: App, text: str, gen: int = 0) -> App:
    app.at.text_area(key=f"tpl_import.{gen}.text").set_value(text)
    app.click("Import template")
    return app


def test_import_pasted_json_shows_every_problem(app: App, ws) -> None:
    app.go("providers")
    import_text(app, "{oops")
    assert any("The template was not imported" in e and "not valid JSON" in e for e in app.errors)

    data = json.loads(json.dumps(RICH.to_dict())) | {"kind": "telepathy"}
    data["creation_schema"]["properties"]["nested"] = {"type": "object"}
    import_text(app, json.dumps(data))
    [error] = [e for e in app.errors if "not imported" in e]
    assert "**kind**: Unknown connection kind 'telepathy'" in error
    assert "**creation_schema.nested**: “Nested” is an object" in error
    assert [t for t in templates.list_templates(ws) if not t.is_builtin] == []


def test_import_then_use_the_template(app: App, ws) -> None:
    app.go("providers")
    import_text(app, templates.export_template(RICH))

    assert "Imported the template “Rich form”." in app.toasts
    mine = templates.get_template(ws, "Rich form")
    assert app.selectbox("Template").value == str(mine.id)  # picked, ready to fill in
    assert "**Rich form** · OpenAI-compatible" in app.everything()


def test_import_a_file(app: App, ws) -> None:
    app.go("providers")
    upload = app.at.file_uploader(key="tpl_import.0.file")
    upload.set_value(("rich.json", templates.export_template(RICH).encode(), "application/json"))
    app.click("Import template")
    assert "Imported the template “Rich form”." in app.toasts


def test_edit_json_checks_before_saving(app: App, ws) -> None:
    mine = templates.create_template(ws, RICH)
    app.go("providers")
    app.at.button(key=f"tpl_edit_{mine.id}").click()
    app.run()
    editor = app.at.text_area(key=f"tpl_edit_form_{mine.id}.text")
    data = json.loads(editor.value)
    data["request_schema"]["properties"]["temperature"]["maximum"] = 9
    editor.set_value(json.dumps(data))
    app.click("Save template")
    assert any(
        "**request_schema.temperature**: Temperature can only be narrowed" in e for e in app.errors
    )

    data["request_schema"]["properties"]["temperature"]["maximum"] = 0.5
    data["request_schema"]["properties"]["temperature"]["default"] = 0.5
    data["name"] = "Rich form v2"
    app.at.text_area(key=f"tpl_edit_form_{mine.id}.text").set_value(json.dumps(data))
    app.click("Save template")
    assert "Saved the template “Rich form v2”." in app.toasts
    assert (
        templates.get_template(ws, mine.id or 0).request_schema["properties"]["temperature"][
            "maximum"
        ]
        == 0.5
    )


def test_copy_a_builtin_then_delete_the_copy(app: App, ws) -> None:
    app.go("providers")
    app.at.button(key="tpl_copy_vllm").click()
    app.run()
    copy = templates.get_template(ws, "vLLM (copy)")
    assert "Copied to “vLLM (copy)”: edit it below." in app.toasts
    assert app.at.text_area(key=f"tpl_edit_form_{copy.id}.text").value  # opened for editing

    app.at.button(key=f"tpl_delete_{copy.id}").click()
    app.run()
    assert "Delete the template **vLLM (copy)**?" in app.everything()
    app.click("Keep it")
    assert templates.get_template(ws, copy.id or 0)
    app.at.button(key=f"tpl_delete_{copy.id}").click()
    app.run()
    app.click("Yes, delete it")
    assert "Deleted the template “vLLM (copy)”." in app.toasts
    with pytest.raises(catalog.NotFoundInCatalog):
        templates.get_template(ws, copy.id or 0)
