"""Run a connection test with a visible status, and never end in a traceback."""

from __future__ import annotations

import streamlit as st

from core.inference.registry import make_adapter
from core.inference.target import Target
from core.inference.types import ConnectionReport
from core.workspace import Workspace


def run_test(ws: Workspace, target: Target) -> ConnectionReport:
    with st.status("Testing the connection…", expanded=False) as status:
        try:
            report = make_adapter(target, ws.client).test_connection()
        except Exception as exc:  # noqa: BLE001 — a report line, not a traceback
            report = ConnectionReport().failed("Request", f"The test itself failed: {exc}")
        status.update(
            label="Connection works" if report.ok else "Connection failed",
            state="complete" if report.ok else "error",
        )
    return report
