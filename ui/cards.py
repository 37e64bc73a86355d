"""Model cards: the grid on the Models page, its ⋮ menu, and the details/edit/delete dialogs.

Dialogs are opened from session state (not from a button's return value) so their own
buttons work on the next run, in the browser and under AppTest alike.
"""

from __future__ import annotations

import streamlit as st

from core import catalog, usage
from core.catalog import CardView, NotFoundInCatalog, ValidationFailed
from core.tables import utcnow
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

VIEW, TRY, EDIT, DELETE = "View details", "Try in Sandbox", "Edit", "Delete"
MENU = (VIEW, TRY, EDIT, DELETE)
OPEN_DIALOG = "models.dialog"  # (action, card_id) of the dialog to show
PAGE = "models.page"  # (the card list it belongs to, page number) of the grid
PAGE_SIZE = 12  # cards drawn at once: four rows of three

STATUS_DOTS = {True: ":green[●]", False: ":red[●]", None: ":gray[○]"}
STATUS_WORDS = {True: "Connection OK", False: "Connection failing", None: "Not tested yet"}


def ago(when: object) -> str:
    """'3 min ago' for a datetime; the page shows times relative to now."""
    from datetime import datetime

    if not isinstance(when, datetime):
        return "never"
    seconds = (utcnow() - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def _close_dialog() -> None:
    st.session_state.pop(OPEN_DIALOG, None)


# --- the grid ---------------------------------------------------------------------------------


def card_grid(cards: list[CardView]) -> None:
    """The cards, PAGE_SIZE at a time: every drawn card costs every rerun of the page, so a
    big catalog is paged (search and filters narrow it first)."""
    signature = (len(cards), cards[0].id if cards else 0)  # which list the page belongs to
    saved_signature, page = st.session_state.get(PAGE, (signature, 0))
    pages = max(1, -(-len(cards) // PAGE_SIZE))
    page = min(page, pages - 1) if saved_signature == signature else 0  # new filters: page 1
    st.session_state[PAGE] = (signature, page)
    grid = st.grid(3, border=True, min_column_width=260)
    for card in cards[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]:
        with grid.cell():
            _card(card)
    if pages > 1:
        _pager(signature, page, pages, len(cards))


def _turn_page(signature: tuple[int, int], page: int) -> None:
    st.session_state[PAGE] = (signature, page)


def _pager(signature: tuple[int, int], page: int, pages: int, total: int) -> None:
    first = page * PAGE_SIZE + 1
    with st.container(horizontal=True, vertical_alignment="center", horizontal_alignment="center"):
        st.button(
            "Previous",
            key="models.previous",
            icon=":material/chevron_left:",
            type="tertiary",
            disabled=page == 0,
            on_click=_turn_page,
            args=(signature, page - 1),
        )
        st.caption(
            f"Page {page + 1} of {pages} · cards {first}–{min(total, first + PAGE_SIZE - 1)} "
            f"of {total}",
            width="content",
        )
        st.button(
            "Next",
            key="models.next",
            icon=":material/chevron_right:",
            icon_position="right",
            type="tertiary",
            disabled=page == pages - 1,
            on_click=_turn_page,
            args=(signature, page + 1),
        )


def _card(card: CardView) -> None:
    # A one-row flex container, not two columns: the same look for one layout block, not three.
    with st.container(horizontal=True, wrap=False, vertical_alignment="top"):
        st.markdown(f"{STATUS_DOTS[card.last_test_ok]} **{card.display_name}**", width="stretch")
        choice = st.menu_button(
            "⋮", MENU, key=f"card_menu_{card.id}", type="tertiary", help="Actions for this model"
        )
    st.caption(f"{card.kind_label} · `{card.remote_model or '—'}` · {card.provider.name}")
    if card.tags:
        st.markdown(" ".join(f":blue-badge[{t.replace(']', '')}]" for t in card.tags))
    if card.description:
        text = card.description
        st.caption(text if len(text) <= 140 else text[:139] + "…")
    if card.last_test_ok is False:
        st.caption(f":red[{STATUS_WORDS[False]}: {card.last_test_summary[:160]}]")
    if not card.enabled:
        st.caption(":orange[Disabled: hidden from the Sandbox]")
    if choice == TRY:
        open_in_sandbox(card.id)
    elif choice in (VIEW, EDIT, DELETE):
        st.session_state[OPEN_DIALOG] = (choice, card.id)


def show_open_dialog(ws: Workspace) -> None:
    opened = st.session_state.get(OPEN_DIALOG)
    if not opened:
        return
    action, card_id = opened
    {VIEW: details_dialog, EDIT: edit_dialog, DELETE: delete_dialog}[action](ws, card_id)


def _card_or_close(ws: Workspace, card_id: int) -> CardView | None:
    try:
        return catalog.get_card(ws, card_id)
    except NotFoundInCatalog:
        st.warning("This model no longer exists; it may have been deleted in another tab.")
        if st.button("Close"):
            _close_dialog()
            st.rerun()
        return None


# --- View details -----------------------------------------------------------------------------


@st.dialog("Model details", width="large", on_dismiss=_close_dialog)
def details_dialog(ws: Workspace, card_id: int) -> None:
    card = _card_or_close(ws, card_id)
    if card is None:
        return
    p = card.provider
    st.subheader(card.display_name)
    if card.description:
        st.write(card.description)
    left, right = st.columns(2)
    with left:
        st.markdown("**Connection**")
        rows = {
            "Kind": p.kind_label,
            "Connection": p.name,
            card.spec.url_label: f"`{p.base_url}`",
            "Model name": f"`{card.remote_model or '—'}`",
            "Authentication": {
                "none": "none",
                "bearer": "Bearer token",
                "api_key": f"header {p.auth_header}",
            }.get(p.auth_type, p.auth_type),
            "API key": f"`{p.masked_key}`" if p.has_key else "—",
            "Extra headers": ", ".join(p.extra_headers) or "—",
            "Timeouts": f"connect {p.connect_timeout or 'default'}, "
            f"read {p.read_timeout or 'default'}",
        }
        if p.settings.get("chat_template"):
            rows["Chat template"] = str(p.settings["chat_template"])
        st.markdown("\n".join(f"- {k}: {v}" for k, v in rows.items()))
    with right:
        st.markdown("**Card**")
        params = (
            ", ".join(f"{k} = {v}" for k, v in card.default_params.items()) or "server defaults"
        )
        st.markdown(
            "\n".join(
                [
                    f"- Tags: {', '.join(card.tags) or '—'}",
                    f"- Context length: {card.context_length or 'unknown'}",
                    f"- Default settings: {params}",
                    f"- Created: {card.created_at:%Y-%m-%d %H:%M} UTC",
                    f"- Updated: {card.updated_at:%Y-%m-%d %H:%M} UTC ({ago(card.updated_at)})",
                    f"- {STATUS_DOTS[card.last_test_ok]} {STATUS_WORDS[card.last_test_ok]}"
                    + (
                        f" ({ago(card.last_test_at)}): {card.last_test_summary}"
                        if card.last_test_at
                        else ""
                    ),
                    f"- Made from the template “{card.template_name}”"
                    if card.template_name
                    else "",
                ]
            )
        )
    _usage_section(ws, card)
    one, two, three = st.columns(3)
    if one.button("Test connection", key="details_test", icon=":material/network_check:"):
        report = run_test(ws, catalog.target_for(ws, card.id))
        catalog.record_test(ws, card.id, report)
        connection_report(report)
    if two.button(TRY, key="details_try", icon=":material/chat:"):
        _close_dialog()
        open_in_sandbox(card.id)
    if three.button(EDIT, key="details_edit", icon=":material/edit:"):
        st.session_state[OPEN_DIALOG] = (EDIT, card.id)
        st.rerun()


def _usage_section(ws: Workspace, card: CardView) -> None:
    st.markdown("**Recent usage**")
    figures = usage.card_usage(ws, card.id)
    if figures.requests == 0:
        st.caption("No requests yet. Try it in the Sandbox.")
        return
    cols = st.columns(4)
    cols[0].metric("Requests", figures.requests, help=f"{figures.errors} failed")
    cols[1].metric("Tokens in / out", f"{figures.prompt_tokens:,} / {figures.completion_tokens:,}")
    latency = f"{figures.median_latency_ms / 1000:.2f} s" if figures.median_latency_ms else "—"
    cols[2].metric("Median latency", latency)
    ttft = f"{figures.median_ttft_ms:.0f} ms" if figures.median_ttft_ms else "—"
    cols[3].metric("Median first token", ttft)
    if figures.last_error:
        err = figures.last_error
        st.caption(f":red[Last error ({ago(err.at)}, {err.kind}): {err.message}]")


# --- Edit -------------------------------------------------------------------------------------


@st.dialog("Edit custom model", width="large", on_dismiss=_close_dialog)
def edit_dialog(ws: Workspace, card_id: int) -> None:
    card = _card_or_close(ws, card_id)
    if card is None:
        return
    key = f"edit.{card.id}"
    errors = FieldErrors()
    if card.provider.model_count > 1:
        st.info(
            f"The connection “{card.provider.name}” is shared by {card.provider.model_count} model "
            "cards: a new endpoint URL or API key applies to all of them.",
            icon=":material/info:",
        )
    if card.kind == "custom_api":
        preset_picker(key, card.provider.settings)
    with st.form(f"{key}.form", border=False, enter_to_submit=False):
        provider_draft = connection_fields(card.spec, key, errors, existing=card.provider)
        remote = card.remote_model
        if card.spec.needs_model or card.remote_model:
            remote = model_name_field(card.spec, key, errors, card.remote_model, [])
        model_draft = model_fields(card.spec, key, errors, existing=card, remote_model=remote)
        errors.general()
        save_col, test_col, cancel_col = st.columns(3)
        save = save_col.form_submit_button(
            "Save custom model", type="primary", icon=":material/save:"
        )
        test = test_col.form_submit_button("Test connection", icon=":material/network_check:")
        cancel = cancel_col.form_submit_button("Cancel")
    if save:
        problems = dict(errors.problems)
        if problems:
            errors.show(problems)
        else:
            try:
                saved = catalog.update_model(ws, card.id, model_draft, provider_draft)
            except ValidationFailed as exc:
                errors.show(exc.errors)
            else:
                flash(f"Saved “{saved.display_name}”.")
                _close_dialog()
                st.rerun()
    if test:
        report = run_test(
            ws, catalog.draft_target(ws, provider_draft, model_draft, provider_id=card.provider.id)
        )
        connection_report(report)
        if card.kind == "custom_api":
            test_exchange(report)
    if card.kind == "custom_api":
        request_preview(ws, provider_draft, model_draft, card.provider.id)
    if cancel:
        _close_dialog()
        st.rerun()


# --- Delete -----------------------------------------------------------------------------------


@st.dialog("Delete custom model?", on_dismiss=_close_dialog)
def delete_dialog(ws: Workspace, card_id: int) -> None:
    card = _card_or_close(ws, card_id)
    if card is None:
        return
    st.write(
        f"**{card.display_name}** will be removed from Plugboard. "
        "Past chats with it stay readable. This cannot be undone."
    )
    also_connection = False
    if card.provider.model_count == 1:
        also_connection = st.checkbox(
            f"Also delete its connection “{card.provider.name}” (no other model uses it)",
            value=True,
            key="delete_connection_too",
        )
    confirm, cancel = st.columns(2)
    if confirm.button(
        "Delete custom model", type="primary", key="confirm_delete", icon=":material/delete:"
    ):
        if also_connection:
            catalog.delete_provider(ws, card.provider.id)
        else:
            catalog.delete_model(ws, card.id)
        flash(f"Deleted “{card.display_name}”.")
        _close_dialog()
        st.rerun()
    if cancel.button("Cancel", key="cancel_delete"):
        _close_dialog()
        st.rerun()
