"""Chat transcript: messages, the figures under each reply, errors with their details."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from core.history import MessageView

ERROR_TITLES = {
    "connection": "Cannot reach the model",
    "timeout": "The model took too long",
    "auth": "Access refused",
    "not_found": "Not found",
    "bad_request": "The request was refused",
    "rate_limited": "Rate limited",
    "server": "The model server failed",
    "bad_response": "Unexpected answer",
    "interrupted": "The reply was cut off",
    "config": "The model is not set up right",
    "blocked": "Not allowed on this server",
}


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def metrics_text(m: MessageView) -> str:
    """'first token 120 ms · total 1.30 s · 57 → 10 tokens · 42.1 tok/s · stop'."""
    approx = "≈" if m.tokens_estimated else ""
    parts = [f"first token {_ms(m.ttft_ms)}", f"total {_ms(m.latency_ms)}"]
    if m.completion_tokens or (m.status == "ok" and m.prompt_tokens is not None):
        parts.append(f"{approx}{m.prompt_tokens or 0} → {approx}{m.completion_tokens or 0} tokens")
    if m.tokens_per_second:
        parts.append(f"{m.tokens_per_second:.1f} tok/s")
    if m.finish_reason:
        parts.append(m.finish_reason)
    return " · ".join(parts)


def error_block(m: MessageView) -> None:
    title = ERROR_TITLES.get(m.error_kind or "", "Something went wrong")
    st.error(f"**{title}.** {m.error_message or ''}", icon=":material/error:")
    if m.error_detail:
        with st.expander("Details"):
            st.code(m.error_detail, language=None, wrap_lines=True)


UNLIKELY = math.log(0.1)  # tokens the model gave under 10 %
DOUBTFUL = math.log(0.5)


def tokens_html(tokens: list[dict[str, Any]]) -> str:
    """The reply as its tokens, unlikely ones highlighted; hover shows the probability."""
    spans = []
    for token in tokens:
        text, logprob = str(token.get("text", "")), token.get("logprob")
        if token.get("special"):
            continue
        style = ""
        title = "no log-probability"
        if isinstance(logprob, int | float):
            title = f"logprob {logprob:.3f} · p = {math.exp(logprob):.1%}"
            if logprob < UNLIKELY:
                style = "background:#fecaca;"
            elif logprob < DOUBTFUL:
                style = "background:#fde68a;"
        spans.append(
            f'<span title="{html.escape(title)}" style="{style}border-radius:3px;'
            f'white-space:pre-wrap">{html.escape(text)}</span>'
        )
    return "<div style='line-height:1.9'>" + "".join(spans) + "</div>"


def details_block(details: dict[str, Any]) -> None:
    """What a server returned beside the text (TGI `details`): tokens, seed, alternatives."""
    with st.expander("Token details"):
        facts = [f"finish reason: {details.get('finish_reason', '—')}"]
        if details.get("generated_tokens") is not None:
            facts.append(f"{details['generated_tokens']} tokens generated")
        facts.append(
            f"seed: {details.get('seed') if details.get('seed') is not None else 'none (greedy)'}"
        )
        st.caption(" · ".join(facts))
        tokens = details.get("tokens") or []
        if tokens:
            st.caption("Unlikely tokens are highlighted: red under 10 %, yellow under 50 %.")
            st.html(tokens_html(tokens))
            st.dataframe(
                [
                    {
                        "token": t.get("text"),
                        "logprob": t.get("logprob"),
                        "probability": math.exp(t["logprob"])
                        if isinstance(t.get("logprob"), int | float)
                        else None,
                    }
                    for t in tokens
                ],
                column_config={
                    "probability": st.column_config.ProgressColumn(min_value=0, max_value=1)
                },
                hide_index=True,
            )
        prefill = details.get("prefill") or []
        if prefill:
            st.caption(f"Prompt tokens (decoder input details): {len(prefill)}")
            st.html(tokens_html(prefill))
        for n, other in enumerate(details.get("best_of_sequences") or [], start=2):
            st.markdown(
                f"**Candidate {n}** (seed {other.get('seed')}, {other.get('finish_reason')}):"
            )
            st.text(str(other.get("generated_text", "")))


def reply_body(m: MessageView) -> None:
    """The reply itself: text, N replies side by side, or a guardrail's verdicts."""
    details = m.details or {}
    verdicts = details.get("verdicts")
    replies = details.get("replies")
    if isinstance(verdicts, list):
        badges = [
            ":red-badge[:material/flag: flagged]" if v else ":green-badge[:material/check: passed]"
            for v in verdicts
        ]
        st.markdown("Guardrail verdict: " + " ".join(badges))
    elif isinstance(replies, list) and len(replies) > 1:
        for n, (column, text) in enumerate(zip(st.columns(len(replies)), replies, strict=True), 1):
            with column:
                st.caption(f"Reply {n} of {len(replies)}")
                st.markdown(str(text))
    elif m.content:
        st.markdown(m.content)


def reply_footer(m: MessageView) -> None:
    """Everything under a reply's text: status notes, error, figures."""
    if m.status == "ok" and not m.content:
        st.caption("The model sent an empty reply.")
    if m.status == "stopped":
        st.caption(":material/stop_circle: Stopped. The partial reply is kept.")
    if m.status == "error":
        if m.content:
            st.caption("The reply above is partial: the error below cut it off.")
        error_block(m)
    st.caption(
        f"{m.model_name} · {metrics_text(m)}",
        help="≈ means counted here; the server sent no usage.",
    )
    if m.details and m.details.get("tokens") is not None:
        details_block(m.details)


def show_transcript(
    messages: Sequence[MessageView],
    *,
    retry: Callable[[MessageView, MessageView], None] | None = None,
) -> None:
    """Draw the messages; offer Retry under a failed last reply."""
    last_user: MessageView | None = None
    for index, m in enumerate(messages):
        if m.role == "user":
            last_user = m
            with st.chat_message("user"):
                st.markdown(m.content)
        elif m.role == "assistant":
            with st.chat_message("assistant"):
                reply_body(m)
                reply_footer(m)
                is_last = index == len(messages) - 1
                if retry and is_last and m.status != "ok" and last_user is not None:
                    st.button(
                        "Retry",
                        key=f"retry_{m.id}",
                        icon=":material/refresh:",
                        on_click=retry,
                        args=(last_user, m),
                    )
