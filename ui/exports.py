"""Download buttons for a chat or a compare run (Markdown, JSON, and CSV for compare)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import streamlit as st

from core import export
from core.workspace import Workspace


def _file_stem(title: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()
    return (stem or "conversation")[:50]


def export_buttons(ws: Workspace, conversation_id: int, *, csv: bool, title: str) -> None:
    """The download buttons. A file is made when its button is pressed (Streamlit calls
    `data` then, off the script run), not on every rerun of the page: a long chat's export
    would otherwise be rebuilt, twice or three times over, whenever anything on the page moves.
    """
    stem = _file_stem(title)
    formats = [
        ("Markdown", export.to_markdown, "md", "text/markdown", ":material/download:"),
        ("JSON", export.to_json, "json", "application/json", ":material/download:"),
    ]
    if csv:
        formats.append(("CSV", export.to_csv, "csv", "text/csv", ":material/table:"))
    for column, (label, render, extension, mime, icon) in zip(
        st.columns(len(formats)), formats, strict=True
    ):
        column.download_button(
            label,
            _deferred(ws, conversation_id, render),
            file_name=f"{stem}.{extension}",
            mime=mime,
            icon=icon,
            on_click="ignore",
            key=f"export_{extension}_{conversation_id}",
        )


def _deferred(
    ws: Workspace, conversation_id: int, render: Callable[[dict[str, Any]], str]
) -> Callable[[], str]:
    def make() -> str:
        return render(export.conversation_data(ws, conversation_id))

    return make
