"""The Sandbox's compare mode: one prompt to 2–6 lanes, streamed side by side, with votes.

The lanes run on worker threads (core.compare.stream_lanes); this script drains their events
and updates one placeholder per lane, so every lane streams at the same time.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import compare, history, votes
from core.catalog import CardView
from core.chat import TurnResult
from core.compare import LETTERS, LaneSpec
from core.history import ConversationView, MessageView
from core.inference.types import TextDelta
from core.params import COMMON_PARAMS, MAX_TOKENS, TEMPERATURE
from core.workspace import Workspace
from ui import sandbox_state as state
from ui.exports import export_buttons
from ui.params import param_input, param_panel
from ui.transcript import error_block, reply_body, reply_footer

LANES = "cmp.lanes"
SYNC = "cmp.sync"
SYSTEM = "cmp.system"
FOCUS = "cmp.focus"
PREFERENCE_LABELS = {"tie": "Tie", "all_bad": "All bad"}


def lane_key(lane: int, what: str) -> str:
    return f"cmp.lane{lane}.{what}"


# --- lanes and their settings ----------------------------------------------------------------


def load_run(conversation: ConversationView) -> None:
    """Put a saved run's lanes into the settings widgets (call from a callback)."""
    lanes = compare.lanes_of(conversation)
    st.session_state[LANES] = len(lanes)
    sync = bool(conversation.params.get("sync", True))
    st.session_state[SYNC] = sync
    for i, lane in enumerate(lanes):
        st.session_state[lane_key(i, "model")] = lane.model_id
        if not sync:
            st.session_state[lane_key(i, "system")] = lane.system_prompt
            for name in ("temperature", "max_tokens"):
                if name in lane.params:
                    st.session_state[lane_key(i, name)] = lane.params[name]
    if sync and lanes:
        st.session_state[SYSTEM] = lanes[0].system_prompt


def lanes_panel(cards: list[CardView], *, expanded: bool) -> tuple[list[LaneSpec], bool]:
    by_id = {c.id: c for c in cards}
    with st.expander("Lanes and settings", expanded=expanded, icon=":material/tune:"):
        top_left, top_right = st.columns([1, 3], vertical_alignment="bottom")
        count = int(
            top_left.number_input(
                "Lanes",
                min_value=compare.MIN_LANES,
                max_value=compare.MAX_LANES,
                value=2,
                key=LANES,
                persist_state="session",
            )
        )
        sync = top_right.toggle(
            "Same system prompt and settings for every lane",
            value=True,
            key=SYNC,
            persist_state="session",
            help="Off: each lane gets its own system prompt, temperature and max tokens — "
            "compare two prompts on one model by picking it in two lanes.",
        )
        shared_prompt, shared_params = "", {}
        if sync:
            shared_prompt = st.text_area(
                "System prompt (every lane)", key=SYSTEM, persist_state="session", height=80
            )
            shared_params = param_panel(COMMON_PARAMS, {}, "cmp.params", persist=True)
        lanes: list[LaneSpec] = []
        for i, column in enumerate(st.columns(count)):
            with column:
                lanes.append(_lane_settings(i, cards, by_id, sync, shared_prompt, shared_params))
    return lanes, sync


def _lane_settings(
    i: int,
    cards: list[CardView],
    by_id: dict[int, CardView],
    sync: bool,
    shared_prompt: str,
    shared_params: dict[str, Any],
) -> LaneSpec:
    key = lane_key(i, "model")
    if st.session_state.get(key) not in by_id:
        st.session_state.pop(key, None)
    model_id = st.selectbox(
        f"Lane {LETTERS[i]}",
        list(by_id),
        index=i % len(cards),
        format_func=lambda m: by_id[m].display_name,
        key=key,
        persist_state="session",
    )
    if sync:
        params = {k: v for k, v in shared_params.items() if v is not None}
        return LaneSpec(model_id, shared_prompt, params)
    card = by_id[model_id]
    system = st.text_area(
        "System prompt", key=lane_key(i, "system"), persist_state="session", height=80
    )
    params = {
        spec.name: param_input(
            spec,
            card.default_params.get(spec.name, spec.default),
            lane_key(i, spec.name),
            persist=True,
        )
        for spec in (TEMPERATURE, MAX_TOKENS)
    }
    return LaneSpec(model_id, system, {k: v for k, v in params.items() if v is not None})


# --- the run ---------------------------------------------------------------------------------


def _set_focus(lane: int | None) -> None:
    st.session_state[FOCUS] = lane


def _rate(message_id: int, key: str) -> None:
    from ui.deps import workspace

    value = st.session_state.get(key)
    votes.set_rating(
        workspace(), message_id, None if value is None else ("up" if value == 1 else "down")
    )


def _prefer(conversation_id: int, turn: int, key: str) -> None:
    from ui.deps import workspace

    votes.set_preference(workspace(), conversation_id, turn, st.session_state.get(key))


def _lane_header(lane: int, name: str, focused: bool) -> None:
    left, right = st.columns([4, 1], vertical_alignment="center")
    left.markdown(f"**{LETTERS[lane]}** · {name}")
    if focused:
        right.button(
            "",
            icon=":material/close_fullscreen:",
            key=f"unfocus_{lane}",
            type="tertiary",
            help="Back to all lanes",
            on_click=_set_focus,
            args=(None,),
        )
    else:
        right.button(
            "",
            icon=":material/open_in_full:",
            key=f"focus_{lane}",
            type="tertiary",
            help="Show this lane full width",
            on_click=_set_focus,
            args=(lane,),
        )


def _reply(m: MessageView, turn: compare.CompareTurn, ratings: dict[int, str]) -> None:
    badges = []
    if turn.fastest() == m.lane:
        badges.append(":green-badge[:material/bolt: fastest]")
    if turn.longest() == m.lane:
        badges.append(":violet-badge[:material/straighten: longest]")
    if badges:
        st.markdown(" ".join(badges))
    reply_body(m)
    reply_footer(m)
    if m.status == "error" and not m.content:
        return  # nothing to rate
    key = f"rate_{m.id}"
    current = ratings.get(m.id)
    st.feedback(
        "thumbs",
        key=key,
        default=None if current is None else (1 if current == "up" else 0),
        on_change=_rate,
        args=(m.id, key),
    )


def show_run(ws: Workspace, conversation: ConversationView) -> None:
    cast = votes.votes_for(ws, conversation.id)
    lanes = sorted({m.lane for m in conversation.messages})
    focus = st.session_state.get(FOCUS)
    if focus not in lanes:
        focus = None
    visible = [focus] if focus is not None else lanes
    names = {m.lane: m.model_name for m in conversation.messages if m.model_name}
    for column, lane in zip(st.columns(len(visible)), visible, strict=True):
        with column:
            _lane_header(lane, names.get(lane, ""), focused=focus is not None)
    for turn in compare.turns(conversation):
        with st.chat_message("user"):
            st.markdown(turn.prompt)
        for column, lane in zip(st.columns(len(visible)), visible, strict=True):
            with column:
                message = turn.replies.get(lane)
                if message is not None:
                    _reply(message, turn, cast.ratings)
        if focus is None and len(turn.replies) > 1:
            _preference(conversation.id, turn, cast.preferences.get(turn.turn))


def _preference(conversation_id: int, turn: compare.CompareTurn, current: str | None) -> None:
    key = f"prefer_{conversation_id}_{turn.turn}"
    options = [LETTERS[lane] for lane in sorted(turn.replies)] + ["tie", "all_bad"]
    st.segmented_control(
        "Which reply is better?",
        options,
        default=current if current in options else None,
        format_func=lambda o: PREFERENCE_LABELS.get(o, o),
        key=key,
        on_change=_prefer,
        args=(conversation_id, turn.turn, key),
    )


def _stream_turn(
    ws: Workspace,
    conversation_id: int,
    prompt: str,
    lanes: list[LaneSpec],
    cards: dict[int, CardView],
) -> None:
    """Every lane at once: one placeholder per lane, filled as the events arrive."""
    with st.chat_message("user"):
        st.markdown(prompt)
    texts = [""] * len(lanes)
    slots = []
    for i, column in enumerate(st.columns(len(lanes))):
        with column:
            card = cards.get(lanes[i].model_id)
            st.markdown(f"**{LETTERS[i]}** · {card.display_name if card else '?'}")
            slots.append(st.empty())
    for lane, event in compare.stream_lanes(ws, conversation_id, prompt, lanes):
        if isinstance(event, TextDelta):
            texts[lane] += event.text
            slots[lane].markdown(texts[lane] + " ▌")
        elif isinstance(event, TurnResult):
            with slots[lane].container():
                if texts[lane]:
                    st.markdown(texts[lane])
                if event.error and event.reply is None:
                    st.error(event.error.message)


def compare_view(ws: Workspace, cards: list[CardView]) -> None:
    by_id = {c.id: c for c in cards}
    run_id = st.session_state.get(state.COMPARE)
    run = history.get_conversation(ws, run_id) if run_id else None
    if run_id and (run is None or run.mode != "compare"):
        st.session_state[state.COMPARE] = run = None
    lanes, sync = lanes_panel(cards, expanded=run is None)

    if run is None:
        st.subheader("New comparison")
        st.caption(
            f"Your prompt goes to {len(lanes)} lanes at once: "
            + ", ".join(
                f"{LETTERS[i]} {by_id[x.model_id].display_name}" for i, x in enumerate(lanes)
            )
            + "."
        )
    else:
        title, exports = st.columns([3, 2], vertical_alignment="center")
        title.subheader(run.title)
        with exports:
            export_buttons(ws, run.id, csv=True, title=run.title)
        show_run(ws, run)

    prompt = st.chat_input("Send to every lane…", submit_mode="stop", key="compare.input")
    if not prompt:
        return
    if run is None:
        run_id = compare.start_compare(ws, lanes, title=prompt, sync=sync)
        st.session_state[state.COMPARE] = run_id
    else:
        run_id = run.id
        compare.save_lanes(ws, run_id, lanes, sync=sync)
    st.session_state[FOCUS] = None
    _stream_turn(ws, run_id, prompt, lanes, by_id)
    st.rerun()  # draw the finished turn from the database, with its figures and votes


__all__ = ["compare_view", "error_block", "load_run"]
