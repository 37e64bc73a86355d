"""Messages that survive a rerun: set before `st.rerun()`, shown once at the top of the next run.

(A toast raised right before `st.rerun()` is lost in the browser; this is the fix.)
"""

from __future__ import annotations

from typing import Literal

import streamlit as st

Kind = Literal["success", "info", "warning", "error"]
_KEY = "_flash_messages"
_ICONS: dict[Kind, str] = {
    "success": ":material/check_circle:",
    "info": ":material/info:",
    "warning": ":material/warning:",
    "error": ":material/error:",
}


def flash(message: str, kind: Kind = "success") -> None:
    st.session_state.setdefault(_KEY, []).append((kind, message))


def show_flashes() -> None:
    for kind, message in st.session_state.pop(_KEY, []):
        st.toast(message, icon=_ICONS[kind])
