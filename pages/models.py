"""Models: the catalog of model cards, with search and filters."""

import streamlit as st

from core import catalog
from ui.cards import card_grid, show_open_dialog
from ui.deps import page_start

ws = page_start()

title, action = st.columns([4, 1], vertical_alignment="bottom")
title.title("Models")
action.page_link("pages/providers.py", label="Manage providers", icon=":material/add_circle:")

everything = catalog.list_cards(ws)
if not everything:
    st.info(
        "No models yet. Go to **Manage providers** and choose **Add custom model** to connect "
        "an endpoint (OpenAI-compatible server, local GGUF file…).",
        icon=":material/lightbulb:",
    )
    st.page_link("pages/providers.py", label="Add a custom model", icon=":material/arrow_forward:")
    st.stop()

search_col, kind_col, tag_col = st.columns([3, 1, 1])
search = search_col.text_input(
    "Search", placeholder="Name, model or tag", key="models.search", label_visibility="collapsed"
)
kinds = sorted({c.kind: c.kind_label for c in everything}.items(), key=lambda kv: kv[1])
kind = kind_col.selectbox(
    "Kind",
    [None, *(k for k, _ in kinds)],
    format_func=lambda k: "All kinds" if k is None else dict(kinds)[k],
    key="models.kind",
    label_visibility="collapsed",
)
tag = tag_col.selectbox(
    "Tag",
    [None, *catalog.all_tags(everything)],
    format_func=lambda t: "All tags" if t is None else t,
    key="models.tag",
    label_visibility="collapsed",
)

cards = catalog.list_cards(ws, search=search, kind=kind, tag=tag)
if cards:
    st.caption(f"{len(cards)} of {len(everything)} model{'s' if len(everything) != 1 else ''}")
    card_grid(cards)
else:
    st.info("No model matches these filters. Clear the search or pick All kinds / All tags.")

show_open_dialog(ws)
