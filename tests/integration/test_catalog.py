"""core/catalog.py on a real database: providers and model cards, validation, views, targets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core import catalog
from core.catalog import ModelDraft, NotFoundInCatalog, ProviderDraft, ValidationFailed
from core.inference.local_gguf import BUNDLED, BUNDLED_LABEL
from core.inference.target import Auth
from core.inference.types import CheckStep, ConfigurationError, ConnectionReport
from core.settings import new_secret_key
from core.workspace import Workspace
from tests.integration.core_helpers import add_openai_card, openai_provider

KEY = "sk-catalog-test-0123456789a1b2"
URL = "http://127.0.0.1:9/v1"

MakeWorkspace = Callable[..., Workspace]


def failed(call: Callable[[], object]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        call()
    return caught.value.errors


def provider(name: str = "Acme", **kw: object) -> ProviderDraft:
    values: dict[str, object] = {"kind": "openai_compat", "base_url": URL, "auth_type": "none"}
    values.update(kw)
    return ProviderDraft(name=name, **values)  # type: ignore[arg-type]


# --- the main CRUD path, on SQLite and PostgreSQL ---------------------------------------------


def test_main_crud_path(make_workspace: MakeWorkspace, database_url: str) -> None:
    ws = make_workspace(database_url, seed=False)
    assert catalog.list_providers(ws) == [] and catalog.list_cards(ws) == []

    created = catalog.create_provider(
        ws,
        provider(
            "Acme AI",
            auth_type="bearer",
            api_key=f"  {KEY} ",
            extra_headers={"X-Team": " research "},
            read_timeout=90.0,
        ),
    )
    assert (
        created.id > 0 and created.name == "Acme AI" and created.kind_label == "OpenAI-compatible"
    )
    assert created.has_key and created.masked_key == "sk-…a1b2"
    assert created.extra_headers == {"X-Team": "research"}
    assert catalog.stored_secret(ws, created.id) == KEY  # stripped before storing

    card = catalog.create_model(
        ws,
        created.id,
        ModelDraft(
            "Acme Large",
            remote_model=" acme-large ",
            description=" Big. ",
            tags=["chat", " Chat ", "big", ""],
            context_length=8192,
            default_params={"temperature": 0.2, "stop": "###\nEND", "top_p": None},
        ),
    )
    assert card.remote_model == "acme-large" and card.description == "Big."
    assert card.tags == ["chat", "big"]
    assert card.default_params == {"temperature": 0.2, "stop": ["###", "END"]}
    assert card.provider.id == created.id and card.kind == "openai_compat"

    second = catalog.create_model(ws, created.id, ModelDraft("Acme Small", remote_model="small"))
    [listed] = catalog.list_providers(ws)
    assert listed.model_count == 2

    fetched = catalog.get_card(ws, card.id)
    assert fetched.display_name == "Acme Large" and fetched.context_length == 8192
    assert fetched.provider.model_count == 2
    assert fetched.created_at.tzinfo is not None  # timezone-aware on both databases

    updated = catalog.update_model(
        ws,
        card.id,
        ModelDraft("Acme Large v2", remote_model="acme-large-2", enabled=False),
        provider("Acme AI (EU)", base_url="https://eu.acme.example/v1", auth_type="bearer"),
    )
    assert updated.display_name == "Acme Large v2" and not updated.enabled
    assert updated.provider.name == "Acme AI (EU)"
    assert updated.provider.base_url == "https://eu.acme.example/v1"
    assert updated.updated_at >= fetched.updated_at
    assert catalog.stored_secret(ws, created.id) == KEY  # no key given: the stored one stays

    renamed = catalog.update_provider(ws, created.id, provider("Acme", auth_type="none"))
    assert renamed.name == "Acme" and not renamed.has_key and renamed.masked_key == ""
    assert catalog.stored_secret(ws, created.id) is None  # no authentication: key removed

    names = [c.display_name for c in catalog.list_cards(ws)]
    assert names == ["Acme Large v2", "Acme Small"]
    assert catalog.find_card(ws, "  acme SMALL ") is not None
    assert catalog.find_card(ws, "Acme") is None

    catalog.delete_model(ws, second.id)
    with pytest.raises(NotFoundInCatalog):
        catalog.get_card(ws, second.id)
    assert [c.display_name for c in catalog.list_cards(ws)] == ["Acme Large v2"]

    catalog.delete_provider(ws, created.id)
    assert catalog.list_providers(ws) == []
    assert catalog.list_cards(ws) == []  # the provider's cards went with it


def test_add_custom_model_creates_connection_and_card_together(workspace: Workspace) -> None:
    card = catalog.add_custom_model(
        workspace,
        provider("My vLLM", auth_type="bearer", api_key=KEY),
        ModelDraft("Llama on vLLM", remote_model="meta-llama/Llama-3.1-8B-Instruct"),
    )
    assert card.provider.name == "My vLLM" and card.provider.model_count == 1
    assert card.provider.masked_key == "sk-…a1b2"
    assert catalog.get_card(workspace, card.id).remote_model == "meta-llama/Llama-3.1-8B-Instruct"
    providers = {p.name: p for p in catalog.list_providers(workspace)}
    assert providers["My vLLM"].model_count == 1


def test_a_failed_add_custom_model_writes_nothing(workspace: Workspace) -> None:
    before_providers = catalog.list_providers(workspace)
    before_cards = catalog.list_cards(workspace)
    failed(
        lambda: catalog.add_custom_model(
            workspace, provider("Fine connection"), ModelDraft("Bad", remote_model="")
        )
    )
    assert catalog.list_providers(workspace) == before_providers
    assert catalog.list_cards(workspace) == before_cards


# --- API keys on update -----------------------------------------------------------------------


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_update_with_a_blank_api_key_keeps_the_stored_one(
    workspace: Workspace, blank: str | None
) -> None:
    card = catalog.add_custom_model(
        workspace, provider("Keyed", auth_type="bearer", api_key=KEY), ModelDraft("K", "m")
    )
    edited = catalog.update_model(
        workspace,
        card.id,
        ModelDraft("K renamed", "m"),
        provider("Keyed", auth_type="bearer", api_key=blank),
    )
    assert edited.provider.has_key and edited.provider.masked_key == "sk-…a1b2"
    assert catalog.stored_secret(workspace, card.provider.id) == KEY
    assert catalog.target_for(workspace, card.id).auth.secret == KEY


def test_update_with_a_new_api_key_replaces_it(workspace: Workspace) -> None:
    card = catalog.add_custom_model(
        workspace, provider("Keyed", auth_type="bearer", api_key=KEY), ModelDraft("K", "m")
    )
    catalog.update_model(
        workspace,
        card.id,
        ModelDraft("K", "m"),
        provider("Keyed", auth_type="bearer", api_key="sk-brand-new-key-9999"),
    )
    assert catalog.stored_secret(workspace, card.provider.id) == "sk-brand-new-key-9999"
    assert catalog.get_card(workspace, card.id).provider.masked_key == "sk-…9999"


def test_a_blank_key_is_refused_when_none_is_stored(workspace: Workspace) -> None:
    card = catalog.add_custom_model(workspace, provider("Open"), ModelDraft("Open card", "m"))
    errors = failed(
        lambda: catalog.update_model(
            workspace,
            card.id,
            ModelDraft("Open card", "m"),
            provider("Open", auth_type="bearer", api_key="  "),
        )
    )
    assert errors == {"api_key": "Enter the API key (or choose No authentication)."}


def test_a_key_with_spaces_inside_is_refused(workspace: Workspace) -> None:
    errors = failed(
        lambda: catalog.create_provider(
            workspace, provider("Spacey", auth_type="bearer", api_key="sk-abc def\n")
        )
    )
    assert errors == {"api_key": "The API key contains spaces or line breaks; paste it again."}


# --- validation -------------------------------------------------------------------------------


def test_every_problem_is_reported_at_once_keyed_by_field(workspace: Workspace) -> None:
    errors = failed(
        lambda: catalog.add_custom_model(
            workspace,
            ProviderDraft(
                name="LOCAL models",  # the seeded connection's name, in other case
                kind="openai_compat",
                base_url="ftp://models.example/v1",
                auth_type="api_key",
                api_key=None,
                auth_header="X API Key",
                extra_headers={"Bad Header": "x"},
                settings={"chat_template": "no-such-template"},
                connect_timeout=0,
                read_timeout=5000,
            ),
            ModelDraft(
                display_name=BUNDLED_LABEL.upper(),
                remote_model="",
                context_length=0,
                default_params={"temperature": 3, "top_pp": 0.5},
            ),
        )
    )
    assert errors == {
        "provider_name": "A connection named 'LOCAL models' already exists.",
        "base_url": "The URL must start with http:// or https://.",
        "api_key": "Enter the API key (or choose No authentication).",
        "auth_header": "A header name uses letters, digits and - only, e.g. X-API-Key.",
        "extra_headers": "'Bad Header' is not a valid header name.",
        "connect_timeout": "A timeout must be between 0 and 3600 seconds.",
        "read_timeout": "A timeout must be between 0 and 3600 seconds.",
        "settings.chat_template": "Unknown chat template 'no-such-template'.",
        "display_name": (
            f"A model named '{BUNDLED_LABEL.upper()}' already exists; pick another name."
        ),
        "remote_model": "Enter the model name the server expects.",
        "context_length": "The context length is a whole number of tokens, 1 or more.",
        "params.temperature": "Temperature must be ≥ 0 and ≤ 2 (got 3).",
        "params.top_pp": "'top_pp' is not a setting this connection kind accepts.",
    }
    assert str(ValidationFailed(errors)).startswith("provider_name: A connection named")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "Enter the endpoint URL."),
        ("ftp://models.example/v1", "The URL must start with http:// or https://."),
        ("localhost:8080/v1", "The URL must start with http:// or https://."),
        ("http://", "The URL must name a host, as in http://localhost:8080/v1."),
        ("https:///v1", "The URL must name a host, as in http://localhost:8080/v1."),
        ("http://my host:8080/v1", "The URL cannot contain spaces."),
        ("http://localhost:8080/v1\nX-Injected: 1", "The URL cannot contain spaces."),
        (
            "https://user:pass@api.example/v1",
            "Put credentials in the API key field, not in the URL.",
        ),
        (
            "https://sk-secret@api.example/v1",
            "Put credentials in the API key field, not in the URL.",
        ),
        ("http://localhost:99999/v1", "The port number is not valid."),
    ],
)
def test_bad_urls_are_explained(workspace: Workspace, url: str, message: str) -> None:
    errors = failed(lambda: catalog.create_provider(workspace, provider("P", base_url=url)))
    assert errors == {"base_url": message}


@pytest.mark.parametrize(
    "url", ["http://localhost:8080/v1", "https://api.openai.com/v1", "http://[::1]:8000", URL]
)
def test_good_urls_pass(workspace: Workspace, url: str) -> None:
    assert catalog.create_provider(workspace, provider("P", base_url=url)).base_url == url


def test_duplicate_display_name_is_case_insensitive(workspace: Workspace) -> None:
    p = catalog.create_provider(workspace, provider())
    catalog.create_model(workspace, p.id, ModelDraft("GPT Mini", "gpt-4o-mini"))
    errors = failed(lambda: catalog.create_model(workspace, p.id, ModelDraft(" gpt mini ", "x")))
    assert errors == {"display_name": "A model named 'gpt mini' already exists; pick another name."}


def test_a_card_may_keep_its_own_name_but_not_take_another(workspace: Workspace) -> None:
    p = catalog.create_provider(workspace, provider())
    first = catalog.create_model(workspace, p.id, ModelDraft("First", "a"))
    catalog.create_model(workspace, p.id, ModelDraft("Second", "b"))
    assert catalog.update_model(workspace, first.id, ModelDraft("FIRST", "a")).display_name == (
        "FIRST"
    )
    errors = failed(lambda: catalog.update_model(workspace, first.id, ModelDraft("second", "a")))
    assert set(errors) == {"display_name"}


def test_duplicate_provider_name(workspace: Workspace) -> None:
    acme = catalog.create_provider(workspace, provider("Acme"))
    other = catalog.create_provider(workspace, provider("Other"))
    assert failed(lambda: catalog.create_provider(workspace, provider("ACME"))) == {
        "provider_name": "A connection named 'ACME' already exists."
    }
    assert set(failed(lambda: catalog.update_provider(workspace, other.id, provider("acme")))) == {
        "provider_name"
    }
    assert catalog.update_provider(workspace, acme.id, provider("acme")).name == "acme"


def test_blank_names_are_refused(workspace: Workspace) -> None:
    assert failed(lambda: catalog.create_provider(workspace, provider("  "))) == {
        "provider_name": "Give the connection a name."
    }
    p = catalog.create_provider(workspace, provider())
    assert failed(lambda: catalog.create_model(workspace, p.id, ModelDraft(" ", "m"))) == {
        "display_name": "Give the model a display name."
    }


def test_temperature_out_of_range_in_the_defaults(workspace: Workspace) -> None:
    p = catalog.create_provider(workspace, provider())
    errors = failed(
        lambda: catalog.create_model(
            workspace, p.id, ModelDraft("T", "m", default_params={"temperature": 3})
        )
    )
    assert errors == {"params.temperature": "Temperature must be ≥ 0 and ≤ 2 (got 3)."}


def test_max_tokens_larger_than_the_context_length(workspace: Workspace) -> None:
    p = catalog.create_provider(workspace, provider())
    errors = failed(
        lambda: catalog.create_model(
            workspace,
            p.id,
            ModelDraft("T", "m", context_length=1024, default_params={"max_tokens": 2048}),
        )
    )
    assert set(errors) == {"params.max_tokens"}


def test_model_name_is_required_for_openai_compatible_only(workspace: Workspace) -> None:
    p = catalog.create_provider(workspace, provider())
    assert failed(lambda: catalog.create_model(workspace, p.id, ModelDraft("No name"))) == {
        "remote_model": "Enter the model name the server expects."
    }
    local = catalog.add_custom_model(
        workspace,
        ProviderDraft("Local 2", "local_gguf", base_url=BUNDLED, auth_type="none"),
        ModelDraft("Local without a model name"),
    )
    assert local.remote_model == ""


@pytest.mark.parametrize("auth_type", ["bearer", "api_key"])
def test_missing_api_key(workspace: Workspace, auth_type: str) -> None:
    errors = failed(
        lambda: catalog.create_provider(
            workspace, provider(auth_type=auth_type, auth_header="X-API-Key")
        )
    )
    assert errors == {"api_key": "Enter the API key (or choose No authentication)."}


def test_invalid_header_names(workspace: Workspace) -> None:
    errors = failed(
        lambda: catalog.create_provider(
            workspace,
            provider(
                auth_type="api_key",
                api_key=KEY,
                auth_header="X-Api:Key",
                auth_prefix="Token\nX",
                extra_headers={"X-Ok": "line1\nline2"},
            ),
        )
    )
    assert errors == {
        "auth_header": "A header name uses letters, digits and - only, e.g. X-API-Key.",
        "auth_prefix": "The prefix must be on one line.",
        "extra_headers": "The value of 'X-Ok' must be on one line.",
    }


def test_a_local_connection_only_takes_no_authentication(workspace: Workspace) -> None:
    errors = failed(
        lambda: catalog.create_provider(
            workspace,
            ProviderDraft("L", "local_gguf", base_url=BUNDLED, auth_type="bearer", api_key=KEY),
        )
    )
    assert errors == {"auth_type": "Local GGUF file connections cannot use 'bearer' auth."}


def test_unknown_kind(workspace: Workspace) -> None:
    errors = failed(lambda: catalog.create_provider(workspace, provider(kind="carrier-pigeon")))
    assert errors == {"kind": "Unknown connection kind 'carrier-pigeon'."}


def test_local_model_file_checks(workspace: Workspace, tmp_path: Path) -> None:
    def local(path: str) -> ProviderDraft:
        return ProviderDraft("L", "local_gguf", base_url=path, auth_type="none")

    missing = tmp_path / "nope.gguf"
    assert failed(lambda: catalog.create_provider(workspace, local(str(missing)))) == {
        "base_url": f"There is no file at {missing}."
    }
    text = tmp_path / "model.bin"
    text.write_bytes(b"x")
    assert failed(lambda: catalog.create_provider(workspace, local(str(text)))) == {
        "base_url": "The file must be a .gguf model file."
    }
    assert failed(lambda: catalog.create_provider(workspace, local(""))) == {
        "base_url": "Enter the path of a .gguf file."
    }
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert catalog.create_provider(workspace, local(str(gguf))).base_url == str(gguf)


def test_unknown_chat_template(workspace: Workspace) -> None:
    draft = ProviderDraft(
        "L", "local_gguf", base_url=BUNDLED, auth_type="none", settings={"chat_template": "vicuna"}
    )
    assert failed(lambda: catalog.create_provider(workspace, draft)) == {
        "settings.chat_template": "Unknown chat template 'vicuna'."
    }


def test_custom_template_syntax_error_is_reported_at_save_time(workspace: Workspace) -> None:
    draft = ProviderDraft(
        "L",
        "local_gguf",
        base_url=BUNDLED,
        auth_type="none",
        settings={
            "chat_template": "custom",
            "custom_template": "{% for m in messages %}\n{{ m.content }\n{% endfor %}",
        },
    )
    errors = failed(lambda: catalog.create_provider(workspace, draft))
    assert list(errors) == ["settings.custom_template"]
    assert errors["settings.custom_template"].startswith("Template syntax error on line 2")
    draft.settings["custom_template"] = "{% for m in messages %}{{ m.content }}\n{% endfor %}"
    assert catalog.create_provider(workspace, draft).settings["chat_template"] == "custom"


def test_too_many_tags(workspace: Workspace) -> None:
    p = catalog.create_provider(workspace, provider())
    errors = failed(
        lambda: catalog.create_model(
            workspace, p.id, ModelDraft("T", "m", tags=[f"t{i}" for i in range(21)])
        )
    )
    assert set(errors) == {"tags"}


# --- reads ------------------------------------------------------------------------------------


def test_list_cards_filters(workspace: Workspace) -> None:
    p = catalog.create_provider(workspace, provider("Remote lab"))
    catalog.create_model(workspace, p.id, ModelDraft("Qwen Coder", "qwen2.5-coder", tags=["Code"]))
    catalog.create_model(workspace, p.id, ModelDraft("Mistral", "mistral-7b", tags=["chat"]))

    def names(**kw: object) -> list[str]:
        return [c.display_name for c in catalog.list_cards(workspace, **kw)]  # type: ignore[arg-type]

    assert names() == [BUNDLED_LABEL, "Mistral", "Qwen Coder"]  # by name, case-insensitively
    assert names(search="coder") == ["Qwen Coder"]  # display name or remote model
    assert names(search="MISTRAL-7B") == ["Mistral"]
    assert names(search="remote lab") == ["Mistral", "Qwen Coder"]  # provider name
    assert names(search="offline") == [BUNDLED_LABEL]  # a tag
    assert names(search="  ") == names()
    assert names(search="nothing like this") == []
    assert names(kind="local_gguf") == [BUNDLED_LABEL]
    assert names(kind="openai_compat") == ["Mistral", "Qwen Coder"]
    assert names(tag="code") == ["Qwen Coder"]
    assert names(tag="CHAT", kind="openai_compat") == ["Mistral"]
    assert names(tag="chat", kind="local_gguf") == []
    assert catalog.all_tags(catalog.list_cards(workspace)) == [
        "bundled",
        "chat",
        "Code",
        "local",
        "offline",
    ]


def test_missing_ids_raise_not_found(workspace: Workspace) -> None:
    card = add_openai_card(workspace, URL)
    catalog.delete_model(workspace, card.id)
    with pytest.raises(NotFoundInCatalog, match=f"Model {card.id} does not exist"):
        catalog.get_card(workspace, card.id)
    with pytest.raises(NotFoundInCatalog):
        catalog.update_model(workspace, card.id, ModelDraft("X", "m"))
    with pytest.raises(NotFoundInCatalog):
        catalog.delete_model(workspace, card.id)
    catalog.delete_provider(workspace, card.provider.id)
    with pytest.raises(NotFoundInCatalog, match="Connection"):
        catalog.get_provider(workspace, card.provider.id)
    with pytest.raises(NotFoundInCatalog):
        catalog.create_model(workspace, card.provider.id, ModelDraft("Y", "m"))


def test_record_test_is_shown_on_the_card(workspace: Workspace) -> None:
    card = add_openai_card(workspace, URL)
    assert card.last_test_ok is None
    report = ConnectionReport([CheckStep("DNS", True, "ok"), CheckStep("Chat", False, "401")])
    catalog.record_test(workspace, card.id, report)
    tested = catalog.get_card(workspace, card.id)
    assert tested.last_test_ok is False and tested.last_test_summary == "Chat: 401"
    assert tested.last_test_at is not None
    catalog.record_test(workspace, 987654, report)  # a deleted card: nothing to record


# --- secrets in views and targets -------------------------------------------------------------


def test_views_show_only_the_masked_key(workspace: Workspace) -> None:
    card = add_openai_card(workspace, URL, api_key=KEY)
    for view in (
        card.provider,
        catalog.get_card(workspace, card.id).provider,
        catalog.get_provider(workspace, card.provider.id),
        *catalog.list_providers(workspace),
        *(c.provider for c in catalog.list_cards(workspace)),
    ):
        assert KEY not in repr(view)
        if view.id == card.provider.id:
            assert view.masked_key == "sk-…a1b2"
    assert KEY not in repr(catalog.target_for(workspace, card.id))


def test_a_short_key_is_fully_hidden(workspace: Workspace) -> None:
    card = add_openai_card(workspace, URL, api_key="hunter2")
    assert card.provider.masked_key == "••••••••"


def test_bearer_target(workspace: Workspace) -> None:
    card = add_openai_card(
        workspace, "http://127.0.0.1:9/v1", api_key=KEY, context_length=4096, remote_model="gpt-x"
    )
    target = catalog.target_for(workspace, card.id)
    assert target.kind == "openai_compat" and target.model == "gpt-x"
    assert target.name == card.display_name and target.context_length == 4096
    assert target.auth == Auth("bearer", KEY, "Authorization", "")
    assert target.request_headers() == {"Authorization": f"Bearer {KEY}"}
    assert target.secrets == (KEY,)
    assert target.timeouts == workspace.settings.timeouts
    assert target.max_retry_wait == workspace.settings.max_retry_wait


@pytest.mark.parametrize(("prefix", "value"), [("Token", f"Token {KEY}"), ("", KEY), ("  ", KEY)])
def test_api_key_target_uses_its_header_and_prefix(
    workspace: Workspace, prefix: str, value: str
) -> None:
    card = catalog.add_custom_model(
        workspace,
        provider(
            "Header auth",
            auth_type="api_key",
            api_key=KEY,
            auth_header=" X-API-Key ",
            auth_prefix=prefix,
            extra_headers={"X-Team": "qa"},
            connect_timeout=1.5,
            read_timeout=45,
        ),
        ModelDraft("Header card", "m"),
    )
    target = catalog.target_for(workspace, card.id)
    assert target.request_headers() == {"X-Team": "qa", "X-API-Key": value}
    assert target.timeouts.connect == 1.5 and target.timeouts.read == 45


def test_target_without_auth_sends_no_credentials(workspace: Workspace) -> None:
    card = add_openai_card(workspace, URL)
    target = catalog.target_for(workspace, card.id)
    assert target.request_headers() == {} and target.secrets == ()


def test_draft_target_uses_the_stored_key_when_the_form_key_is_blank(
    workspace: Workspace,
) -> None:
    card = add_openai_card(workspace, URL, api_key=KEY)
    pid = card.provider.id
    model = ModelDraft("Echo model", "test-model")
    for blank in (None, "", "  "):
        form = openai_provider(URL, name="Echo model server", api_key=KEY)
        form.api_key = blank
        target = catalog.draft_target(workspace, form, model, provider_id=pid)
        assert target.auth.secret == KEY
    typed = openai_provider(URL, api_key="sk-typed-in-the-form-0000")
    assert catalog.draft_target(workspace, typed, model, provider_id=pid).auth.secret == (
        "sk-typed-in-the-form-0000"
    )
    unsaved = openai_provider(URL, api_key=None)
    unsaved.auth_type = "bearer"
    assert catalog.draft_target(workspace, unsaved, model).auth.secret is None


def test_a_key_stored_under_another_secret_key(
    make_workspace: MakeWorkspace, tmp_path: Path
) -> None:
    """PLUGBOARD_SECRET_KEY changed: the views say so, and old keys make it work again."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    old_key = new_secret_key()
    first = make_workspace(url, PLUGBOARD_SECRET_KEY=old_key)
    card = add_openai_card(first, URL, api_key=KEY)

    changed = make_workspace(url, PLUGBOARD_SECRET_KEY=new_secret_key())
    view = catalog.get_card(changed, card.id)
    assert view.provider.has_key
    assert view.provider.masked_key == "(cannot be decrypted: enter the key again in Edit)"
    with pytest.raises(ConfigurationError, match="PLUGBOARD_OLD_SECRET_KEYS"):
        catalog.target_for(changed, card.id)

    rotated = make_workspace(
        url, PLUGBOARD_SECRET_KEY=new_secret_key(), PLUGBOARD_OLD_SECRET_KEYS=old_key
    )
    assert catalog.target_for(rotated, card.id).auth.secret == KEY
