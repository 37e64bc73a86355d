"""The only place that knows about Streamlit caching: one Workspace per process."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from core.settings import load_settings
from core.workspace import Workspace


def _close(ws: Workspace) -> None:
    ws.close()


@st.cache_resource(show_spinner="Opening the database…", on_release=_close)
def workspace() -> Workspace:
    """Settings from the environment, the database migrated and seeded, the HTTP client."""
    from ui.access import oidc_configured

    settings = load_settings()
    if oidc_configured():  # a sign-in means a shared server: stricter egress defaults
        settings = replace(settings, shared=True)
    return Workspace.open(settings)


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
    from ui.access import signed_in
    from ui.flash import show_flashes

    ws = workspace()
    if not signed_in(ws.settings):  # app.py already stopped; pages never run on their own
        st.stop()
    show_flashes()
    return ws
