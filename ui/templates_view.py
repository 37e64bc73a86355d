"""Manage providers → model templates: a model from a template (a form drawn from the
template's JSON Schema), and the list of templates with export, import, edit and delete.
"""

from __future__ import annotations

import contextlib
from typing import Any

import streamlit as st

from core import catalog, templates
from core.catalog import ValidationFailed
from core.inference.registry import kinds
from core.templates import FieldSpec, TemplateView
from core.workspace import Workspace
from ui.connection_test import run_test
from ui.connections import LAST_ADDED
from ui.flash import flash
from ui.forms import FieldErrors, connection_report

PICK = "templates.pick"
NEXT_PICK = "templates.next_pick"  # set after an import: picked on the next run
FORM_GEN = "templates.form_gen"  # bumped after a create or an import: fresh, empty widgets
TESTED = "templates.tested"
EDITING = "templates.editing"
DELETING = "templates.deleting"


def _gen() -> int:
    return int(st.session_state.setdefault(FORM_GEN, 0))


def _bump() -> None:
    st.session_state[FORM_GEN] = _gen() + 1


def show_problems(errors: dict[str, str], what: str = "saved") -> None:
    """A template's problems, each with where it is (for JSON that has no form fields)."""
    lines = [f"- **{key}**: {message}" for key, message in errors.items()]
    st.error(f"The template was not {what}:\n\n" + "\n".join(lines), icon=":material/error:")


# --- a form from a schema ---------------------------------------------------------------------


def field_input(spec: FieldSpec, key: str) -> Any:
    """One creation parameter as a widget; returns its value (None or "" when left empty)."""
    label = f"{spec.label} *" if spec.required else spec.label
    help_text = spec.help or None
    if spec.widget == "unsupported":
        st.caption(f":orange[{spec.problem}]")
        return None
    if spec.widget == "select":
        options = list(spec.options)
        index = options.index(spec.default) if spec.default in options else None
        if index is None and spec.required and len(options) == 1:
            index = 0
        return st.selectbox(
            label, options, index=index, key=key, help=help_text, placeholder="Choose…"
        )
    if spec.widget == "boolean":
        return st.checkbox(label, value=spec.default is True, key=key, help=help_text)
    if spec.widget in ("integer", "number"):
        whole = spec.widget == "integer"
        cast = int if whole else float
        low = cast(spec.minimum) if spec.minimum is not None else None
        high = cast(spec.maximum) if spec.maximum is not None else None
        value = spec.default if isinstance(spec.default, int | float) else None
        if value is not None and (
            isinstance(value, bool)
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            value = None  # a default outside the range: the check says so on submit
        return st.number_input(
            label,
            min_value=low,
            max_value=high,
            value=cast(value) if value is not None else None,
            step=1 if whole else 0.1,
            key=key,
            help=help_text,
            placeholder=spec.placeholder or ("required" if spec.required else "optional"),
        )
    return st.text_input(
        label,
        value="" if spec.default is None else str(spec.default),
        type="password" if spec.secret else "default",
        max_chars=spec.max_length,
        placeholder=spec.placeholder or ("Paste the key" if spec.secret else ""),
        key=key,
        help=help_text,
    )


def schema_form(fields: list[FieldSpec], key: str, errors: FieldErrors) -> dict[str, Any]:
    """Every field, each with a slot for its message. Returns {property: value}."""
    values: dict[str, Any] = {}
    for spec in fields:
        values[spec.name] = field_input(spec, f"{key}.{spec.name}")
        errors.slot(spec.name)
    return values


def _offered(template: TemplateView) -> str:
    """The request parameters a model made from it accepts, with what the template narrowed."""
    params = templates.request_params(template)
    if not params:
        return ""
    kind = {p.name: p for p in spec.params} if (spec := kinds().get(template.kind)) else {}
    declared = templates.properties(template.request_schema)
    parts = []
    for p in params:
        notes = []
        if p.name in kind and p.range_text() != kind[p.name].range_text():
            notes.append(p.range_text())
        if "default" in declared.get(p.name, {}):
            notes.append(f"default {p.default}")
        parts.append(p.label + (f" ({', '.join(notes)})" if notes else ""))
    return "Settings a model made from it accepts: " + ", ".join(parts) + "."


# --- Add from a template ----------------------------------------------------------------------


def _title(template: TemplateView) -> str:
    return f"{template.name} (built-in)" if template.is_builtin else template.name


def add_from_template(ws: Workspace) -> None:
    if NEXT_PICK in st.session_state:
        st.session_state[PICK] = st.session_state.pop(NEXT_PICK)
    by_ref = {str(t.ref): t for t in templates.list_templates(ws)}
    if st.session_state.get(PICK) not in by_ref:
        st.session_state.pop(PICK, None)
    choice = st.selectbox(
        "Template",
        list(by_ref),
        format_func=lambda ref: _title(by_ref[ref]),
        key=PICK,
        help="A template fixes the connection's details and asks only for what changes "
        "from one model to the next.",
    )
    template = by_ref[choice]
    st.caption(f"{template.description} · {template.kind_label}".strip(" ·"))
    if not template.available:
        st.info(
            f"This template needs the '{template.kind}' connection kind, which this Plugboard "
            "does not have yet.",
            icon=":material/info:",
        )
        return
    fields = templates.describe_fields(template.creation_schema)
    key = f"tpl.{_gen()}.{choice}"
    errors = FieldErrors()
    with st.form(f"{key}.form", border=False, enter_to_submit=False):
        values = schema_form(fields, key, errors)
        if any(f.required for f in fields):
            st.caption("\\* required")
        offered = _offered(template)
        if offered:
            st.caption(offered)
        errors.general()
        test_col, create_col = st.columns(2)
        test = test_col.form_submit_button(
            "Test connection", key=f"{key}.test", icon=":material/network_check:"
        )
        create = create_col.form_submit_button(
            "Create model", type="primary", key=f"{key}.create", icon=":material/add:"
        )
    if test:
        _test(ws, template, values, errors, key)
    tested = st.session_state.get(TESTED)
    if tested and tested["key"] == key:
        connection_report(tested["report"])
    if create:
        _create(ws, template, values, errors, key)


def _test(
    ws: Workspace, template: TemplateView, values: dict[str, Any], errors: FieldErrors, key: str
) -> None:
    st.session_state.pop(TESTED, None)
    try:
        _, built = templates.draft_for(ws, template.ref, values)
    except ValidationFailed as exc:
        errors.show(exc.errors)
        return
    report = run_test(ws, catalog.draft_target(ws, built.provider, built.model))
    st.session_state[TESTED] = {
        "key": key,
        "report": report,
        "fingerprint": (built.provider.base_url, built.model.remote_model),
    }


def _create(
    ws: Workspace, template: TemplateView, values: dict[str, Any], errors: FieldErrors, key: str
) -> None:
    try:
        card = templates.create_model_from_template(ws, template.ref, values)
    except ValidationFailed as exc:
        errors.show(exc.errors)
        return
    except catalog.NotFoundInCatalog as exc:
        st.error(str(exc), icon=":material/error:")
        return
    tested = st.session_state.pop(TESTED, None)
    if (
        tested
        and tested["key"] == key
        and tested["fingerprint"]
        == (
            card.provider.base_url,
            card.remote_model,
        )
    ):
        catalog.record_test(ws, card.id, tested["report"])
    flash(f"Added “{card.display_name}” from the template “{template.name}”.")
    st.session_state[LAST_ADDED] = card.id
    _bump()
    st.rerun()


# --- the list: export, import, edit, delete ---------------------------------------------------


def templates_list(ws: Workspace) -> None:
    st.caption(
        "Built-in templates come with Plugboard; copy one to make it your own. Exported files "
        "never contain an API key."
    )
    import_form(ws)
    editing, deleting = st.session_state.get(EDITING), st.session_state.get(DELETING)
    for template in templates.list_templates(ws):
        with st.container(border=True):
            _row(ws, template)
            if not template.is_builtin and template.id == editing:
                edit_form(ws, template)
            if not template.is_builtin and template.id == deleting:
                _confirm_delete(ws, template)


def _row(ws: Workspace, template: TemplateView) -> None:
    info, actions = st.columns([4, 1])
    badge = " :gray-badge[built-in]" if template.is_builtin else ""
    info.markdown(f"**{template.name}**{badge} · {template.kind_label}")
    if template.description:
        info.caption(template.description)
    asks = ", ".join(
        f.label + (" *" if f.required else "")
        for f in templates.describe_fields(template.creation_schema)
    )
    used = template.card_count
    info.caption(
        f"Asks for: {asks or 'nothing'} · made {used} model{'' if used == 1 else 's'} so far"
    )
    if not template.available:
        info.caption(
            f":orange[Needs the '{template.kind}' connection kind, not in this Plugboard.]"
        )
    ref = template.ref
    actions.download_button(
        "Export",
        templates.export_template(template),
        file_name=templates.export_filename(template),
        mime="application/json",
        icon=":material/download:",
        on_click="ignore",
        key=f"tpl_export_{ref}",
    )
    if template.is_builtin:
        if actions.button(
            "Make a copy",
            key=f"tpl_copy_{ref}",
            icon=":material/copy_all:",
            help="A copy among your own templates, to edit.",
        ):
            copy = templates.copy_template(ws, ref)
            flash(f"Copied to “{copy.name}”: edit it below.")
            st.session_state[EDITING] = copy.id
            st.rerun()
        return
    if actions.button("Edit JSON", key=f"tpl_edit_{ref}", icon=":material/edit:"):
        st.session_state[EDITING] = template.id
        st.session_state.pop(DELETING, None)
        st.rerun()
    if actions.button("Delete template", key=f"tpl_delete_{ref}", icon=":material/delete:"):
        st.session_state[DELETING] = template.id
        st.session_state.pop(EDITING, None)
        st.rerun()


def edit_form(ws: Workspace, template: TemplateView) -> None:
    assert template.id is not None
    key = f"tpl_edit_form_{template.id}"
    with st.form(key, border=False, enter_to_submit=False):
        text = st.text_area(
            "Template JSON",
            value=templates.export_template(template),
            height=420,
            key=f"{key}.text",
            help="name, description, kind, fixed (settings every model shares), "
            "creation_schema (what a person fills in) and request_schema (the settings a "
            "model accepts), as JSON Schema draft 2020-12.",
        )
        save_col, close_col = st.columns(2)
        save = save_col.form_submit_button("Save template", type="primary", icon=":material/save:")
        close = close_col.form_submit_button("Close editor")
    if save:
        try:
            saved = templates.update_template(ws, template.id, templates.parse_template(text))
        except ValidationFailed as exc:
            show_problems(exc.errors)
        except catalog.NotFoundInCatalog as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            flash(f"Saved the template “{saved.name}”.")
            st.session_state.pop(EDITING, None)
            st.rerun()
    if close:
        st.session_state.pop(EDITING, None)
        st.rerun()


def _confirm_delete(ws: Workspace, template: TemplateView) -> None:
    assert template.id is not None
    made = template.card_count
    st.markdown(
        f"Delete the template **{template.name}**?"
        + (
            f" The {made} model{'' if made == 1 else 's'} made from it keep working."
            if made
            else ""
        )
    )
    yes, no = st.columns(2)
    if yes.button("Yes, delete it", type="primary", key=f"tpl_confirm_delete_{template.id}"):
        with contextlib.suppress(catalog.NotFoundInCatalog):  # deleted meanwhile elsewhere
            templates.delete_template(ws, template.id)
        flash(f"Deleted the template “{template.name}”.")
        st.session_state.pop(DELETING, None)
        st.rerun()
    if no.button("Keep it", key=f"tpl_keep_{template.id}"):
        st.session_state.pop(DELETING, None)
        st.rerun()


def import_form(ws: Workspace) -> None:
    key = f"tpl_import.{_gen()}"
    with st.expander("Import a template", icon=":material/upload:"):
        with st.form(key, border=False, enter_to_submit=False):
            upload = st.file_uploader("Template file (.json)", type=["json"], key=f"{key}.file")
            pasted = st.text_area(
                "Or paste the template's JSON",
                key=f"{key}.text",
                height=160,
                placeholder='{"name": "…", "kind": "openai_compat", "fixed": {…}, '
                '"creation_schema": {…}, "request_schema": {…}}',
            )
            go = st.form_submit_button("Import template", icon=":material/upload:")
        if not go:
            return
        text: str | bytes = upload.getvalue() if upload is not None else pasted
        if not text.strip():
            st.error("Choose a file or paste a template's JSON first.", icon=":material/error:")
            return
        try:
            view = templates.import_template(ws, text)
        except ValidationFailed as exc:
            show_problems(exc.errors, "imported")
            return
    flash(f"Imported the template “{view.name}”.")
    st.session_state[NEXT_PICK] = str(view.ref)
    _bump()
    st.rerun()
