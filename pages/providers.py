"""Manage providers: add custom models and manage the connections behind them."""

import streamlit as st

from ui.connections import add_model_form, connections_list, last_added_notice
from ui.deps import page_start

ws = page_start()

st.title("Manage providers")
st.caption(
    "Connect a model endpoint: choose its kind, enter the endpoint URL, API key and model name, "
    "test the connection, then add it as a model card."
)
last_added_notice(ws)
with st.container(border=True):
    st.subheader("Add custom model")
    add_model_form(ws)

st.subheader("Connections")
connections_list(ws)
