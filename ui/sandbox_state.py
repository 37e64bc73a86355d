"""Session-state keys the Sandbox shares with other pages (they persist between pages)."""

from __future__ import annotations

import streamlit as st

MODEL = "sandbox.model"  # the picked card id (the picker widget's own key)
CONVERSATION = "sandbox.conversation_id"  # None: a new chat, created on the first message
SYSTEM_PROMPT = "sandbox.system_prompt"
MODE = "sandbox.mode"  # "Chat" or "Compare"
COMPARE = "sandbox.compare_id"  # the open compare run; None: a new one on the first prompt
CHAT, COMPARE_MODE = "Chat", "Compare"


def open_in_sandbox(model_id: int) -> None:
    """Try in Sandbox: a new chat with this model selected."""
    st.session_state[MODEL] = model_id
    st.session_state[CONVERSATION] = None
    st.session_state[MODE] = CHAT
    st.switch_page("pages/sandbox.py")
