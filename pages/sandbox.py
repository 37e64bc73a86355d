"""Sandbox: chat with one model, or compare several side by side on the same prompt."""

import streamlit as st

from core import catalog
from ui import sandbox_state as state
from ui.chat_history import history_sidebar
from ui.chat_view import chat_view
from ui.compare_view import compare_view
from ui.deps import page_start

ws = page_start()

cards = [c for c in catalog.list_cards(ws) if c.enabled]
if not cards:
    st.title("Sandbox")
    st.info("There is no model to chat with yet. Add one first.", icon=":material/lightbulb:")
    st.page_link("pages/providers.py", label="Manage providers", icon=":material/arrow_forward:")
    st.stop()

mode = st.segmented_control(
    "Mode",
    [state.CHAT, state.COMPARE_MODE],
    default=state.CHAT,
    required=True,
    key=state.MODE,
    persist_state="session",
    label_visibility="collapsed",
    format_func=lambda m: "Chat" if m == state.CHAT else "Compare models",
)
history_sidebar(ws, mode)
if mode == state.COMPARE_MODE:
    compare_view(ws, cards)
else:
    chat_view(ws, cards)
