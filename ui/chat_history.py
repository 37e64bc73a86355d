"""The Sandbox sidebar: New chat, and past chats to reopen or delete."""

from __future__ import annotations

import streamlit as st

from core import history
from core.workspace import Workspace
from ui import sandbox_state as state
from ui.cards import ago
from ui.flash import flash

DELETING = "sandbox.deleting"  # id of the chat whose delete dialog is open


def _open(conversation_id: int | None) -> None:
    st.session_state[state.CONVERSATION] = conversation_id


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
        if st.session_state.get(state.CONVERSATION) == conversation_id:
            st.session_state[state.CONVERSATION] = None
        flash(f"Deleted the chat “{conversation.title}”.")
        _close()
        st.rerun()
    if cancel.button("Cancel", key="cancel_delete_chat"):
        _close()
        st.rerun()


def history_sidebar(ws: Workspace) -> None:
    current = st.session_state.get(state.CONVERSATION)
    with st.sidebar:
        st.button(
            "New chat",
            icon=":material/add_comment:",
            key="sandbox.new_chat",
            on_click=_open,
            args=(None,),
            width="stretch",
            type="primary" if current else "secondary",
        )
        chats = history.list_conversations(ws, mode="chat", limit=30)
        if not chats:
            st.caption("Your chats will be listed here.")
        else:
            st.caption("Recent chats")
        for chat in chats:
            title, delete = st.columns([5, 1], vertical_alignment="center")
            title.button(
                chat.title,
                key=f"chat_open_{chat.id}",
                on_click=_open,
                args=(chat.id,),
                type="primary" if chat.id == current else "tertiary",
                help=f"{chat.message_count} messages · {ago(chat.updated_at)}",
                width="stretch",
            )
            delete.button(
                "",
                key=f"chat_delete_{chat.id}",
                icon=":material/delete:",
                on_click=_ask_delete,
                args=(chat.id,),
                type="tertiary",
                help="Delete this chat",
            )
    deleting = st.session_state.get(DELETING)
    if deleting:
        delete_chat_dialog(ws, deleting)
