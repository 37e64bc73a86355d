"""The Sandbox's chat mode: one model, its settings, the transcript, the prompt box."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing

import streamlit as st

from core import history, templates
from core.catalog import CardView
from core.chat import TurnRequest, TurnResult, stream_turn
from core.inference.types import TextDelta
from core.workspace import Workspace
from ui import sandbox_state as state
from ui.exports import export_buttons
from ui.params import param_panel
from ui.transcript import show_transcript

RETRY = "sandbox.retry"  # (prompt, ids to replace) set by the Retry button
DROPPED = "sandbox.dropped"  # how many old messages the last turn left out
WINDOW = 40  # messages of a chat drawn at first (its newest); "Show earlier" adds as many


def _shown_key(conversation_id: int) -> str:
    return f"sandbox.shown.{conversation_id}"


def _show_earlier(conversation_id: int, shown: int) -> None:
    st.session_state[_shown_key(conversation_id)] = shown + WINDOW


def window_start(messages: Sequence[history.MessageView], shown: int) -> int:
    """Where the drawn part of a long chat starts: about the newest `shown` messages, from a
    prompt, so no reply is drawn without its question.

    Each drawn message costs every rerun of the page (any click, every streamed turn's end),
    so a long chat draws its newest WINDOW messages and offers the earlier ones on request.
    """
    start = max(0, len(messages) - shown)
    while start > 0 and messages[start].role != "user":
        start -= 1
    return start


def _retry(prompt: str, message_ids: list[int]) -> None:
    st.session_state[RETRY] = (prompt, message_ids)


def _retry_failed(user: history.MessageView, failed: history.MessageView) -> None:
    _retry(user.content, [user.id, failed.id])


def settings_panel(ws: Workspace, cards: list[CardView]) -> tuple[CardView, str, dict[str, object]]:
    by_id = {c.id: c for c in cards}
    model_id = st.selectbox(
        "Model",
        list(by_id),
        format_func=lambda i: by_id[i].display_name,
        key=state.MODEL,
        persist_state="session",
    )
    card = by_id[model_id]
    st.caption(f"{card.kind_label} · `{card.remote_model or '—'}`")
    if card.kind == "custom_api":
        from core.inference.custom_api import multi_turn_note

        if note := multi_turn_note(card.provider.settings):
            st.caption(f":material/info: {note}")
    system_prompt = st.text_area(
        "System prompt",
        key=state.SYSTEM_PROMPT,
        persist_state="session",
        placeholder="Additional instructions, e.g. “Answer in one short paragraph.”",
        height=120,
    )
    if card.template_name:
        st.caption(f"Made from the template *{card.template_name}*.")
    params = param_panel(
        templates.card_params(ws, card),
        card.default_params,
        f"sandbox.params.{card.id}",
        persist=True,
    )
    return card, system_prompt, {k: v for k, v in params.items() if v is not None}


def chat_view(ws: Workspace, cards: list[CardView]) -> None:
    by_id = {c.id: c for c in cards}
    if st.session_state.get(state.MODEL) not in by_id:
        st.session_state[state.MODEL] = cards[0].id
    chat_col, settings_col = st.columns([3, 1], gap="large")
    with settings_col:
        card, system_prompt, params = settings_panel(ws, cards)

    retry_prompt: str | None = None
    if pending := st.session_state.pop(RETRY, None):  # Retry: replace the failed attempt
        retry_prompt, replaced = pending
        history.delete_messages(ws, replaced)

    conversation_id = st.session_state.get(state.CONVERSATION)
    shown = st.session_state.get(_shown_key(conversation_id)) or WINDOW
    # The newest messages only (one more, so the first drawn reply can have its prompt).
    conversation = (
        history.get_conversation(ws, conversation_id, last=shown + 1) if conversation_id else None
    )
    if conversation_id and (conversation is None or conversation.mode != "chat"):
        st.session_state[state.CONVERSATION] = conversation_id = None  # deleted meanwhile
        conversation = None

    with chat_col:
        if conversation is None:
            st.subheader("New chat")
            st.caption(f"Chatting with **{card.display_name}**. Type below to start.")
        else:
            title, exports = st.columns([3, 2], vertical_alignment="center")
            title.subheader(conversation.title)
            with exports:
                export_buttons(ws, conversation.id, csv=False, title=conversation.title)
            messages = conversation.messages
            start = window_start(messages, shown)
            if earlier := conversation.message_count - (len(messages) - start):
                st.button(
                    f"Show earlier messages ({earlier} more)",
                    key=f"sandbox.earlier.{conversation.id}",
                    icon=":material/expand_less:",
                    type="tertiary",
                    on_click=_show_earlier,
                    args=(conversation.id, len(messages) - start),
                )
            show_transcript(messages[start:], retry=_retry_failed)
            if dropped := st.session_state.pop(DROPPED, 0):
                st.caption(
                    f":material/content_cut: {dropped} older message(s) were left out of the "
                    f"last request to fit the model's context ({card.context_length} tokens)."
                )

    prompt = st.chat_input(f"Message {card.display_name}…", submit_mode="stop", key="sandbox.input")
    prompt = prompt or retry_prompt
    if not prompt:
        return
    if conversation_id is None:
        conversation_id = history.create_conversation(
            ws, title=prompt, system_prompt=system_prompt, params=params
        ).id
        st.session_state[state.CONVERSATION] = conversation_id
    request = TurnRequest(
        model_id=card.id,
        prompt=prompt,
        conversation_id=conversation_id,
        system_prompt=system_prompt,
        params=params,
    )
    with chat_col:
        result = _stream(ws, request)
    if result is not None:
        # Draw the finished turn from the database: title, history list and figures update.
        st.session_state[DROPPED] = result.dropped
        st.rerun()


def _stream(ws: Workspace, request: TurnRequest) -> TurnResult | None:
    """Show the prompt and the reply as it streams; the turn's result once it has ended."""
    outcome: dict[str, TurnResult] = {}

    def reply_text() -> Iterator[str]:
        with closing(stream_turn(ws, request)) as events:
            for event in events:
                if isinstance(event, TextDelta):
                    yield event.text
                else:
                    outcome["result"] = event

    with st.chat_message("user"):
        st.markdown(request.prompt)
    with st.chat_message("assistant"), closing(reply_text()) as stream:
        st.write_stream(stream)
    return outcome.get("result")
