"""Sandbox: chat with one model, with a system prompt and generation settings."""

from collections.abc import Iterator
from contextlib import closing

import streamlit as st

from core import catalog, history
from core.chat import TurnRequest, TurnResult, stream_turn
from core.inference.types import TextDelta
from ui import sandbox_state as state
from ui.chat_history import history_sidebar
from ui.deps import page_start
from ui.params import param_panel
from ui.transcript import show_transcript

ws = page_start()
RETRY = "sandbox.retry"  # (prompt, ids to replace) set by the Retry button
DROPPED = "sandbox.dropped"  # how many old messages the last turn left out

cards = [c for c in catalog.list_cards(ws) if c.enabled]
if not cards:
    st.title("Sandbox")
    st.info("There is no model to chat with yet. Add one first.", icon=":material/lightbulb:")
    st.page_link("pages/providers.py", label="Manage providers", icon=":material/arrow_forward:")
    st.stop()

by_id = {c.id: c for c in cards}
if st.session_state.get(state.MODEL) not in by_id:
    st.session_state[state.MODEL] = cards[0].id
st.session_state.setdefault(state.CONVERSATION, None)

history_sidebar(ws)

chat_col, settings_col = st.columns([3, 1], gap="large")
with settings_col:
    model_id = st.selectbox(
        "Model",
        list(by_id),
        format_func=lambda i: by_id[i].display_name,
        key=state.MODEL,
        persist_state="session",
    )
    card = by_id[model_id]
    st.caption(f"{card.kind_label} · `{card.remote_model or '—'}`")
    system_prompt = st.text_area(
        "System prompt",
        key=state.SYSTEM_PROMPT,
        persist_state="session",
        placeholder="Additional instructions, e.g. “Answer in one short paragraph.”",
        height=120,
    )
    params = param_panel(
        card.spec.params, card.default_params, f"sandbox.params.{card.id}", persist=True
    )

retry_prompt: str | None = None
if pending := st.session_state.pop(RETRY, None):  # Retry: replace the failed attempt
    retry_prompt, replaced = pending
    history.delete_messages(ws, replaced)

conversation_id = st.session_state[state.CONVERSATION]
conversation = history.get_conversation(ws, conversation_id) if conversation_id else None
if conversation_id and conversation is None:  # deleted in another tab
    st.session_state[state.CONVERSATION] = conversation_id = None


def retry(prompt: str, message_ids: list[int]) -> None:
    st.session_state[RETRY] = (prompt, message_ids)


def retry_failed(user: history.MessageView, failed: history.MessageView) -> None:
    retry(user.content, [user.id, failed.id])


with chat_col:
    st.subheader(conversation.title if conversation else "New chat")
    if conversation is None:
        st.caption(f"Chatting with **{card.display_name}**. Type below to start.")
    else:
        show_transcript(conversation.messages, retry=retry_failed)
        if dropped := st.session_state.pop(DROPPED, 0):
            st.caption(
                f":material/content_cut: {dropped} older message(s) were left out of the last "
                f"request to fit the model's context ({card.context_length} tokens)."
            )

prompt = st.chat_input(f"Message {card.display_name}…", submit_mode="stop", key="sandbox.input")
prompt = prompt or retry_prompt

if prompt:
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
        params={k: v for k, v in params.items() if v is not None},
    )
    outcome: dict[str, TurnResult] = {}

    def reply_text() -> Iterator[str]:
        with closing(stream_turn(ws, request)) as events:
            for event in events:
                if isinstance(event, TextDelta):
                    yield event.text
                else:
                    outcome["result"] = event

    with chat_col:
        with st.chat_message("user"):
            st.markdown(prompt)
        with st.chat_message("assistant"):
            with closing(reply_text()) as stream:
                st.write_stream(stream)
            result = outcome.get("result")
    if result is not None:
        # Draw the finished turn from the database: title, history list and figures update.
        st.session_state[DROPPED] = result.dropped
        st.rerun()
