"""Manage providers: add custom models (by hand or from a template), templates, connections."""

import streamlit as st

from ui.connections import add_model_form, connections_list, last_added_notice
from ui.deps import page_start
from ui.templates_view import add_from_template, templates_list

ws = page_start()

st.title("Manage providers")
st.caption(
    "Connect a model endpoint: choose its kind, enter the endpoint URL, API key and model name, "
    "test the connection, then add it as a model card. Or start from a template."
)
last_added_notice(ws)
with st.container(border=True):
    by_hand, from_template, manage = st.tabs(
        ["Add custom model", "Add from a template", "Templates"]
    )
    with by_hand:
        add_model_form(ws)
    with from_template:
        add_from_template(ws)
    with manage:
        templates_list(ws)

st.subheader("Connections")
connections_list(ws)
