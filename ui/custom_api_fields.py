"""Custom API connections: presets, JSONata expressions and settings, and the request preview."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import catalog
from core.catalog import ModelDraft, ProviderDraft
from core.inference import custom_api
from core.inference.types import ConnectionReport, GenerationParams, Message
from core.workspace import Workspace
from ui.forms import FieldErrors

SAMPLE = [
    Message("system", "You are a helpful assistant."),
    Message("user", "What is machine learning?"),
]
FIELDS = (
    "request_expression",
    "response_expression",
    "response_type",
    "batch_size",
    "multi_turn",
    "enable_retry",
)


def _fill(key: str) -> None:
    preset = custom_api.PRESETS[st.session_state[f"{key}.preset"]]
    st.session_state[f"{key}.request_expression"] = preset.request_expression
    st.session_state[f"{key}.response_expression"] = preset.response_expression
    st.session_state[f"{key}.response_type"] = preset.response_type


def preset_picker(key: str, settings: dict[str, Any]) -> None:
    """Outside the form: choosing a preset fills the expressions, which stay editable."""
    current = settings.get("preset") or "passthrough"
    names = list(custom_api.PRESETS)
    st.selectbox(
        "Start from a preset",
        names,
        index=names.index(current) if current in names else names.index("passthrough"),
        format_func=lambda n: custom_api.PRESETS[n].label,
        key=f"{key}.preset",
        on_change=_fill,
        args=(key,),
        help="Fills the request and response expressions for a known API; edit them freely.",
    )


def custom_api_fields(key: str, errors: FieldErrors, settings: dict[str, Any]) -> dict[str, Any]:
    """Inside the form: the expressions and the DynamoEval-style settings."""
    saved = custom_api.CustomAPISettings.from_dict(settings)
    for field in FIELDS:  # first draw: start from the saved settings
        st.session_state.setdefault(f"{key}.{field}", getattr(saved, field))
    request = st.text_area(
        "Request transformation (JSONata)",
        key=f"{key}.request_expression",
        height=150,
        placeholder="Empty: send the standard request as it is",
        help="Turns the standard request {messages: [[…]], N, seq_len, temperature} into your "
        "API's body. $model is the model name.",
    )
    errors.slot("settings.request_expression")
    response = st.text_area(
        "Response transformation (JSONata)",
        key=f"{key}.response_expression",
        height=68,
        placeholder="Empty: the reply must be a JSON list",
        help="Turns your API's reply into a list: one text (or true/false) per conversation.",
    )
    errors.slot("settings.response_expression")
    left, middle, right = st.columns(3)
    response_type = left.radio(
        "Replies are",
        custom_api.RESPONSE_TYPES,
        format_func=lambda t: "texts" if t == "string" else "true/false (guardrail)",
        key=f"{key}.response_type",
    )
    batch_size = middle.number_input(
        "Batch size",
        min_value=1,
        max_value=custom_api.MAX_BATCH_SIZE,
        step=1,
        key=f"{key}.batch_size",
        help="How many conversations go in one request (batch runs).",
    )
    with right:
        multi_turn = st.toggle(
            "Multi-turn",
            key=f"{key}.multi_turn",
            help="Off: only the last user message is sent, without history or system prompt.",
        )
        enable_retry = st.toggle(
            "Retry on failure",
            key=f"{key}.enable_retry",
            help="Retry connection errors, 429 and 5xx with backoff.",
        )
    errors.slot("settings.response_type", "settings.batch_size")
    return {
        "request_expression": request,
        "response_expression": response,
        "response_type": response_type,
        "batch_size": int(batch_size),
        "multi_turn": multi_turn,
        "enable_retry": enable_retry,
        "preset": st.session_state.get(f"{key}.preset", saved.preset),
    }


def request_preview(
    ws: Workspace, draft: ProviderDraft, model: ModelDraft, provider_id: int | None
) -> None:
    """The exact request a sample conversation would make, the key masked."""
    from core.inference.custom_api import CustomAPIAdapter

    target = catalog.draft_target(ws, draft, model, provider_id=provider_id)
    params = GenerationParams.from_dict(
        {"temperature": 0.7, "max_tokens": 256, **model.default_params}
    )
    preview = CustomAPIAdapter(target, ws.client).preview_request(SAMPLE, params)
    with st.expander(
        "Request preview (a sample conversation)", expanded=True, icon=":material/preview:"
    ):
        st.caption(f"POST `{preview['url']}`")
        if note := custom_api.multi_turn_note(draft.settings):
            st.caption(note)
        st.json(preview["headers"], expanded=True)
        if preview["error"]:
            st.error(preview["error"], icon=":material/error:")
        else:
            st.json(preview["body"], expanded=2)


def test_exchange(report: ConnectionReport) -> None:
    """After Test connection: what went out, what came back, what the expression made of it."""
    info = report.info
    if not any(k in info for k in ("request_body", "raw_response", "transformed")):
        return
    with st.expander("Test exchange", expanded=True, icon=":material/swap_horiz:"):
        if "request_body" in info:
            st.caption("Sent")
            st.json(info["request_body"], expanded=1)
        if "raw_response" in info:
            st.caption("Received")
            raw = info["raw_response"]
            if isinstance(raw, str):
                st.code(raw, language=None)
            else:
                st.json(raw, expanded=1)
        if "transformed" in info:
            st.caption("After the response transformation")
            st.json(info["transformed"], expanded=True)
