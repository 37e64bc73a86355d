"""The Sandbox sidebar: New chat, and past chats to reopen or delete."""

from __future__ import annotations

import streamlit as st

from core import history
from core.workspace import Workspace
from ui import sandbox_state as state
from ui.cards import ago
from ui.flash import flash

DELETING = "sandbox.deleting"  # id of the chat whose delete dialog is open


def _open(conversation_id: int | None, mode: str) -> None:
    """Open a past chat or compare run (None: start a new one in `mode`)."""
    st.session_state[state.MODE] = mode
    if mode == state.CHAT:
        st.session_state[state.CONVERSATION] = conversation_id
        return
    st.session_state[state.COMPARE] = conversation_id
    if conversation_id is not None:
        from ui.compare_view import load_run
        from ui.deps import workspace

        run = history.get_conversation(workspace(), conversation_id)
        if run is not None:
            load_run(run)


def _ask_delete(conversation_id: int) -> None:
    st.session_state[DELETING] = conversation_id


def _close() -> None:
    st.session_state.pop(DELETING, None)


@st.dialog("Delete this chat?", on_dismiss=_close)
def delete_chat_dialog(ws: Workspace, conversation_id: int) -> None:
    conversation = history.get_conversation(ws, conversation_id)
    if conversation is None:
        _close()
        st.rerun()
        return
    st.write(
        f"“{conversation.title}” and its {len(conversation.messages)} messages will be deleted."
    )
    confirm, cancel = st.columns(2)
    if confirm.button("Delete chat", type="primary", key="confirm_delete_chat"):
        history.delete_conversation(ws, conversation_id)
        for key in (state.CONVERSATION, state.COMPARE):
            if st.session_state.get(key) == conversation_id:
                st.session_state[key] = None
        flash(f"Deleted the chat “{conversation.title}”.")
        _close()
        st.rerun()
    if cancel.button("Cancel", key="cancel_delete_chat"):
        _close()
        st.rerun()


def history_sidebar(ws: Workspace, mode: str) -> None:
    current_key = state.CHAT if mode == state.CHAT else state.COMPARE_MODE
    current = st.session_state.get(state.CONVERSATION if mode == state.CHAT else state.COMPARE)
    with st.sidebar:
        st.button(
            "New chat" if mode == state.CHAT else "New comparison",
            icon=":material/add_comment:",
            key="sandbox.new_chat",
            on_click=_open,
            args=(None, current_key),
            width="stretch",
            type="primary" if current else "secondary",
        )
        chats = history.list_conversations(ws, limit=30)
        st.caption("Recent chats and comparisons" if chats else "Your chats will be listed here.")
        for chat in chats:
            chat_mode = state.COMPARE_MODE if chat.mode == "compare" else state.CHAT
            is_current = chat.id == current and chat_mode == mode
            title, delete = st.columns([5, 1], vertical_alignment="center")
            title.button(
                chat.title,
                key=f"chat_open_{chat.id}",
                icon=":material/view_column:"
                if chat.mode == "compare"
                else ":material/chat_bubble:",
                on_click=_open,
                args=(chat.id, chat_mode),
                type="primary" if is_current else "tertiary",
                help=f"{'Comparison' if chat.mode == 'compare' else 'Chat'} · "
                f"{chat.message_count} messages · {ago(chat.updated_at)}",
                width="stretch",
            )
            delete.button(
                "",
                key=f"chat_delete_{chat.id}",
                icon=":material/delete:",
                on_click=_ask_delete,
                args=(chat.id,),
                type="tertiary",
                help="Delete",
            )
    deleting = st.session_state.get(DELETING)
    if deleting:
        delete_chat_dialog(ws, deleting)
