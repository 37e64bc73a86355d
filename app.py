"""Plugboard: try your own LLM endpoints in the browser.

The entry point: page setup, the database (opened, migrated and seeded once per process),
and navigation over the pages in pages/.
"""

import streamlit as st

from ui.access import require_access
from ui.deps import open_workspace_or_stop

st.set_page_config(page_title="Plugboard", page_icon="🔌", layout="wide")

workspace = open_workspace_or_stop()

pages = [
    st.Page("pages/models.py", title="Models", icon=":material/view_module:", default=True),
    st.Page("pages/providers.py", title="Manage providers", icon=":material/cable:"),
    st.Page("pages/sandbox.py", title="Sandbox", icon=":material/chat:"),
    st.Page("pages/usage.py", title="Usage", icon=":material/monitoring:"),
]
# Nothing below is drawn for someone not signed in: every address shows the sign-in.
require_access(workspace.settings, [p.url_path for p in pages])
page = st.navigation(pages)

with st.sidebar:
    st.caption(
        f"Data: `{workspace.settings.home}` · "
        f"{'PostgreSQL' if workspace.engine.dialect.name == 'postgresql' else 'SQLite'}"
    )

page.run()
