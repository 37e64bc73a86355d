"""Download buttons for a chat or a compare run (Markdown, JSON, and CSV for compare)."""

from __future__ import annotations

import re

import streamlit as st

from core import export
from core.workspace import Workspace


def _file_stem(title: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()
    return (stem or "conversation")[:50]


def export_buttons(ws: Workspace, conversation_id: int, *, csv: bool) -> None:
    data = export.conversation_data(ws, conversation_id)
    stem = _file_stem(data["title"])
    columns = st.columns(3 if csv else 2)
    columns[0].download_button(
        "Markdown",
        export.to_markdown(data),
        file_name=f"{stem}.md",
        mime="text/markdown",
        icon=":material/download:",
        on_click="ignore",
        key=f"export_md_{conversation_id}",
    )
    columns[1].download_button(
        "JSON",
        export.to_json(data),
        file_name=f"{stem}.json",
        mime="application/json",
        icon=":material/download:",
        on_click="ignore",
        key=f"export_json_{conversation_id}",
    )
    if csv:
        columns[2].download_button(
            "CSV",
            export.to_csv(data),
            file_name=f"{stem}.csv",
            mime="text/csv",
            icon=":material/table:",
            on_click="ignore",
            key=f"export_csv_{conversation_id}",
        )
