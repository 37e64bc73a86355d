"""Manage providers: the Add-custom-model form and the list of connections with their dialogs."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import catalog, seed
from core.catalog import ModelDraft, ProviderDraft, ProviderView, ValidationFailed
from core.inference.registry import kinds, spec_for
from core.inference.types import ConnectionReport
from core.workspace import Workspace
from ui.connection_test import run_test
from ui.custom_api_fields import preset_picker, request_preview, test_exchange
from ui.flash import flash
from ui.forms import (
    FieldErrors,
    connection_fields,
    connection_report,
    model_fields,
    model_name_field,
)
from ui.sandbox_state import open_in_sandbox

FORM_GEN = "providers.form_gen"  # bumped after a save: fresh, empty widgets
LAST_ADDED = "providers.last_added"
OPEN_DIALOG = "providers.dialog"
NEW = "__new__"


def _form_key() -> str:
    return f"add.{st.session_state.setdefault(FORM_GEN, 0)}"


# --- Add custom model -------------------------------------------------------------------------


def last_added_notice(ws: Workspace) -> None:
    card_id = st.session_state.get(LAST_ADDED)
    if not card_id:
        return
    try:
        card = catalog.get_card(ws, card_id)
    except catalog.NotFoundInCatalog:
        st.session_state.pop(LAST_ADDED, None)
        return
    with st.container(border=True):
        st.success(f"“{card.display_name}” is ready.", icon=":material/check_circle:")
        left, right = st.columns(2)
        if left.button("Try in Sandbox", type="primary", key="added_try", icon=":material/chat:"):
            st.session_state.pop(LAST_ADDED, None)
            open_in_sandbox(card.id)
        if right.button("Add another", key="added_dismiss"):
            st.session_state.pop(LAST_ADDED, None)
            st.rerun()


def add_model_form(ws: Workspace) -> None:
    key = _form_key()
    specs = kinds()
    kind = st.radio(
        "Connection kind",
        list(specs),
        format_func=lambda k: specs[k].label,
        horizontal=True,
        key=f"{key}.kind",
    )
    spec = specs[kind]
    st.caption(spec.description)
    providers = [p for p in catalog.list_providers(ws) if p.kind == kind]
    by_id = {p.id: p for p in providers}
    choice = NEW
    if providers:
        choice = st.selectbox(
            "Connection",
            [NEW, *by_id],
            format_func=lambda pid: (
                "New connection" if pid == NEW else f"{by_id[pid].name} — {by_id[pid].base_url}"
            ),
            key=f"{key}.{kind}.connection",
            help="A connection (endpoint and key) can hold several model cards.",
        )
    errors = FieldErrors()
    fkey = f"{key}.{kind}"
    existing: ProviderView | None = by_id.get(choice) if choice != NEW else None
    state_key = f"{fkey}.test"
    tested: dict[str, Any] = st.session_state.get(state_key, {})
    if kind == "custom_api" and existing is None:
        preset_picker(fkey, {})
    # A form sends every field with the button press (a typed key is never left behind).
    with st.form(f"{fkey}.form", border=False, enter_to_submit=False):
        if existing is None:
            draft = connection_fields(spec, fkey, errors, name_field=True)
        else:
            draft = catalog.provider_draft(existing)
            st.caption(f"Endpoint `{existing.base_url}` · key {existing.masked_key or 'none'}")
        remote = model_name_field(spec, fkey, errors, "", tested.get("models", []))
        model = model_fields(spec, fkey, errors, remote_model=remote)
        if not model.display_name.strip():
            model.display_name = remote.strip()  # the model name doubles as the display name
        errors.general()
        test_col, add_col = st.columns(2)
        test = test_col.form_submit_button("Test connection", icon=":material/network_check:")
        add = add_col.form_submit_button("Add custom model", type="primary", icon=":material/add:")
    fingerprint = (draft.base_url, draft.auth_type, existing and existing.id)
    if test:
        target = catalog.draft_target(
            ws, draft, model, provider_id=existing.id if existing else None
        )
        report = run_test(ws, target)
        st.session_state[state_key] = {
            "report": report,
            "models": report.remote_models,
            "fingerprint": fingerprint,
        }
        st.rerun()  # redraw the model-name field with the server's list
    if tested.get("report") is not None:
        connection_report(tested["report"])
        if kind == "custom_api":
            test_exchange(tested["report"])
    if kind == "custom_api":
        request_preview(ws, draft, model, existing.id if existing else None)
    if add:
        same = tested.get("fingerprint") == fingerprint  # the test is still about these settings
        _add(ws, draft, model, existing, errors, tested.get("report") if same else None)


def _add(
    ws: Workspace,
    draft: ProviderDraft,
    model: ModelDraft,
    existing: ProviderView | None,
    errors: FieldErrors,
    report: ConnectionReport | None,
) -> None:
    if errors.problems:
        errors.show(errors.problems)
        return
    if model.context_length is None and report and report.info.get("max_total_tokens"):
        model.context_length = int(report.info["max_total_tokens"])  # TGI's /info says it
    try:
        if existing is None:
            card = catalog.add_custom_model(ws, draft, model)
        else:
            card = catalog.create_model(ws, existing.id, model)
    except ValidationFailed as exc:
        errors.show(exc.errors)
        return
    if report is not None:
        catalog.record_test(ws, card.id, report)
    flash(f"Added “{card.display_name}”.")
    st.session_state[LAST_ADDED] = card.id
    st.session_state[FORM_GEN] = st.session_state.get(FORM_GEN, 0) + 1
    st.rerun()


# --- Connections ------------------------------------------------------------------------------


def connections_list(ws: Workspace) -> None:
    providers = catalog.list_providers(ws)
    if not providers:
        st.info("No connections yet. Add a custom model above.", icon=":material/info:")
    cards = catalog.list_cards(ws)
    for provider in providers:
        with st.container(border=True):
            info, actions = st.columns([4, 1])
            key_text = f" · key `{provider.masked_key}`" if provider.has_key else ""
            info.markdown(f"**{provider.name}** · {provider.kind_label}")
            info.caption(f"`{provider.base_url}`{key_text}")
            names = [c.display_name for c in cards if c.provider.id == provider.id]
            info.caption("Model cards: " + (", ".join(names) if names else "none yet"))
            if actions.button("Edit", key=f"conn_edit_{provider.id}", icon=":material/edit:"):
                st.session_state[OPEN_DIALOG] = ("edit", provider.id)
            if actions.button("Delete", key=f"conn_delete_{provider.id}", icon=":material/delete:"):
                st.session_state[OPEN_DIALOG] = ("delete", provider.id)
            if provider.kind == "xinference" and actions.button(
                "Manage server", key=f"conn_xi_{provider.id}", icon=":material/dns:"
            ):
                st.session_state[OPEN_DIALOG] = ("xinference", provider.id)
    with ws.session() as session:
        missing_bundled = not seed.has_bundled(session)
    if missing_bundled and st.button(
        "Add the bundled Gemma 3 270M (local) again", icon=":material/restore:"
    ):
        with ws.session() as session:
            card = seed.add_bundled(session)
        flash(f"Added “{card.display_name}”.")
        st.rerun()
    opened = st.session_state.get(OPEN_DIALOG)
    if opened:
        action, provider_id = opened
        dialogs = {
            "edit": edit_connection_dialog,
            "delete": delete_connection_dialog,
            "xinference": xinference_dialog,
        }
        dialogs[action](ws, provider_id)


def _close() -> None:
    st.session_state.pop(OPEN_DIALOG, None)


def _provider_or_close(ws: Workspace, provider_id: int) -> ProviderView | None:
    try:
        return catalog.get_provider(ws, provider_id)
    except catalog.NotFoundInCatalog:
        st.warning("This connection no longer exists.")
        if st.button("Close"):
            _close()
            st.rerun()
        return None


@st.dialog("Edit connection", width="large", on_dismiss=_close)
def edit_connection_dialog(ws: Workspace, provider_id: int) -> None:
    provider = _provider_or_close(ws, provider_id)
    if provider is None:
        return
    spec = spec_for(provider.kind)
    key = f"conn.{provider.id}"
    errors = FieldErrors()
    with st.form(f"{key}.form", border=False, enter_to_submit=False):
        name = st.text_input("Connection name", value=provider.name, key=f"{key}.name")
        errors.slot("provider_name")
        draft = connection_fields(spec, key, errors, existing=provider)
        draft.name = name
        errors.general()
        save_col, test_col, cancel_col = st.columns(3)
        save = save_col.form_submit_button(
            "Save connection", type="primary", icon=":material/save:"
        )
        test = test_col.form_submit_button("Test connection", icon=":material/network_check:")
        cancel = cancel_col.form_submit_button("Cancel")
    if save:
        if errors.problems:
            errors.show(errors.problems)
        else:
            try:
                catalog.update_provider(ws, provider.id, draft)
            except ValidationFailed as exc:
                errors.show(exc.errors)
            else:
                flash(f"Saved “{draft.name.strip()}”.")
                _close()
                st.rerun()
    cards = [c for c in catalog.list_cards(ws) if c.provider.id == provider.id]
    if test:
        model = catalog.model_draft(cards[0]) if cards else ModelDraft(display_name="test")
        connection_report(
            run_test(ws, catalog.draft_target(ws, draft, model, provider_id=provider.id))
        )
    if cancel:
        _close()
        st.rerun()


@st.dialog("Delete connection?", on_dismiss=_close)
def delete_connection_dialog(ws: Workspace, provider_id: int) -> None:
    provider = _provider_or_close(ws, provider_id)
    if provider is None:
        return
    cards = [c.display_name for c in catalog.list_cards(ws) if c.provider.id == provider.id]
    st.write(f"**{provider.name}** and its stored API key will be deleted.")
    if cards:
        st.warning(f"Its model cards go too: {', '.join(cards)}. Past chats stay readable.")
    confirm, cancel = st.columns(2)
    if confirm.button("Delete connection", type="primary", key="confirm_delete_connection"):
        catalog.delete_provider(ws, provider.id)
        flash(f"Deleted “{provider.name}”.")
        _close()
        st.rerun()
    if cancel.button("Cancel", key="cancel_delete_connection"):
        _close()
        st.rerun()


@st.dialog("Xinference server", width="large", on_dismiss=_close)
def xinference_dialog(ws: Workspace, provider_id: int) -> None:
    from ui.xinference_view import manage_server

    provider = _provider_or_close(ws, provider_id)
    if provider is None:
        return
    st.caption(f"{provider.name} · `{provider.base_url}`")
    manage_server(ws, provider)
