"""Usage: requests, errors, tokens, latency and compare win rates over a time window."""

import streamlit as st

from core import usage
from ui.deps import page_start
from ui.usage_view import controls, empty_state, report, show_report

ws = page_start()

st.title("Usage")
if not usage.has_usage(ws):
    empty_state()
    st.stop()

query = controls(ws)
if query is not None:
    show_report(report(ws, query))
