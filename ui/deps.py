"""The only place that knows about Streamlit caching: one Workspace per process."""

from __future__ import annotations

import streamlit as st

from core.workspace import Workspace


def _close(ws: Workspace) -> None:
    ws.close()


@st.cache_resource(show_spinner="Opening the database…", on_release=_close)
def workspace() -> Workspace:
    """Settings from the environment, the database migrated and seeded, the HTTP client."""
    return Workspace.open()


def open_workspace_or_stop() -> Workspace:
    """The workspace, or a plain-words error page if the database cannot be opened."""
    try:
        return workspace()
    except Exception as exc:
        st.error(
            "Plugboard cannot open its database. Check DATABASE_URL (and that the database "
            "server is running), then reload this page.",
            icon=":material/database:",
        )
        with st.expander("Details"):
            st.code(f"{type(exc).__name__}: {exc}")
        st.stop()
        raise  # unreachable: st.stop() ends the run


def page_start() -> Workspace:
    """What every page does first: get the workspace and show messages left by the last run.

    (Flashes are drawn by the page, not by app.py: AppTest only keeps what the page itself
    draws on a rerun.)
    """
    from ui.flash import show_flashes

    ws = workspace()
    show_flashes()
    return ws
