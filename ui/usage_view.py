"""The Usage page: window, buckets and grouping controls; charts; the figures table; CSV.

Every figure comes from `core.usage.usage_report()` (aggregated in the database); this module
only lays it out. Times are UTC everywhere, the charts included (Vega-Lite's `utc` scale, so
the browser does not shift them into its own time zone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from core import catalog, usage
from core.usage import Figures, GroupBy, UsageReport
from core.workspace import Workspace

LAST_HOUR, LAST_DAY, LAST_WEEK, LAST_MONTH, CUSTOM = (
    "Last hour",
    "Last 24 hours",
    "Last 7 days",
    "Last 30 days",
    "Custom dates",
)
WINDOWS: dict[str, timedelta | None] = {
    LAST_HOUR: timedelta(hours=1),
    LAST_DAY: timedelta(days=1),
    LAST_WEEK: timedelta(days=7),
    LAST_MONTH: timedelta(days=30),
    CUSTOM: None,
}
DEFAULT_BUCKETS = {LAST_HOUR: 12, LAST_DAY: 24, LAST_WEEK: 28, LAST_MONTH: 30, CUSTOM: 30}
MAX_BUCKETS = 200
GROUP_LABELS: dict[GroupBy, str] = {"model": "Model", "provider": "Provider"}
NOUN: dict[GroupBy, str] = {"model": "Model", "provider": "Provider"}
TIME_FORMAT = "%Y-%m-%d %H:%M"
DEFINITIONS = (
    "Latency and time to first token: successful requests only; median and 95th percentile "
    "by nearest rank (always a measured value). Tokens/s: completion tokens ÷ total request "
    "time of successful requests. Errors: requests that ended with an error, by kind."
)
WIN_RATE_NOTE = (
    "Win rate: compare votes cast in this window. Each voted compare turn is one comparison "
    "for every model that answered in it; the chosen lane's model wins. A tie or “all bad” "
    "is a comparison without a winner; a model in two lanes counts once; turns where every "
    "lane ran the same model are left out."
)


@dataclass(frozen=True)
class Query:
    start: datetime
    end: datetime
    buckets: int
    group_by: GroupBy
    model_ids: list[int] | None


def empty_state() -> None:
    """Nothing recorded yet: say where usage comes from."""
    st.info(
        "No usage yet. Every request sent to a model from the **Sandbox** (chat or compare) is "
        "counted here: requests, errors, tokens, latency and compare votes.",
        icon=":material/lightbulb:",
    )
    st.page_link("pages/sandbox.py", label="Open the Sandbox", icon=":material/arrow_forward:")


def report(ws: Workspace, query: Query) -> UsageReport:
    """The report for the query, made once per state of the data: a rerun that changes
    nothing (a chart tab, the CSV button, another person looking) reads it from memory."""
    return _cached_report(
        ws,
        ws.settings.database_url,
        usage.data_version(ws),
        query.start,
        query.end,
        query.buckets,
        query.group_by,
        None if query.model_ids is None else tuple(query.model_ids),
    )


@st.cache_resource(max_entries=32, show_spinner="Adding up the usage…")
def _cached_report(
    _ws: Workspace,
    database: str,  # which database (the workspace itself is not hashed)
    version: tuple[object, ...],  # usage.data_version: any change makes a new entry
    start: datetime,
    end: datetime,
    buckets: int,
    group_by: GroupBy,
    model_ids: tuple[int, ...] | None,
) -> UsageReport:
    return usage.usage_report(
        _ws, start=start, end=end, buckets=buckets, group_by=group_by, model_ids=model_ids
    )


def controls(ws: Workspace, now: datetime | None = None) -> Query | None:
    """The window, number of buckets, grouping and model filter (None: dates not picked yet)."""
    with st.container(border=True):
        window_col, dates_col, buckets_col, group_col = st.columns(
            [2, 3, 1, 2], vertical_alignment="bottom"
        )
        window = window_col.selectbox("Window", list(WINDOWS), index=1, key="usage.window")
        buckets = int(
            buckets_col.number_input(
                "Buckets",
                min_value=1,
                max_value=MAX_BUCKETS,
                value=DEFAULT_BUCKETS[window],
                step=1,
                key=f"usage.buckets.{window}",  # each window remembers its own count
                help="How many equal time spans the window is cut into.",
            )
        )
        group_by: GroupBy = group_col.segmented_control(
            "Group by",
            list(GROUP_LABELS),
            default="model",
            required=True,
            format_func=GROUP_LABELS.__getitem__,
            key="usage.group",
        )
        cards = {c.id: c.display_name for c in catalog.list_cards(ws)}
        picked = st.multiselect(
            "Models",
            list(cards),
            format_func=lambda i: cards.get(i, f"#{i}"),
            placeholder="All models",
            key="usage.models",
        )
        span = WINDOWS[window]
        if span is not None:
            end = _next_minute(now or datetime.now(UTC))
            start = end - span
            dates_col.caption(f"{start:{TIME_FORMAT}} → {end:{TIME_FORMAT}} UTC")
        else:
            today = (now or datetime.now(UTC)).date()
            dates = dates_col.date_input(
                "Dates (UTC)",
                value=(today - timedelta(days=6), today),
                max_value=today,
                key="usage.dates",
                help="From the start of the first day to the end of the last one, in UTC.",
            )
            if not isinstance(dates, tuple | list) or len(dates) != 2:
                st.info("Pick the last day of the range too.", icon=":material/date_range:")
                return None
            start, end = _day_start(dates[0]), _day_start(dates[1]) + timedelta(days=1)
    return Query(start, end, buckets, group_by, list(picked) or None)


def _next_minute(now: datetime) -> datetime:
    """Rolling windows end on the next whole minute: tidier bucket edges."""
    floor = now.astimezone(UTC).replace(second=0, microsecond=0)
    return floor if floor == now else floor + timedelta(minutes=1)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


# --- the report ---------------------------------------------------------------------------------


def show_report(report: UsageReport) -> None:
    span = _duration(report.bucket_span)
    st.caption(
        f"All times are UTC. {report.start:{TIME_FORMAT}} → {report.end:{TIME_FORMAT}} UTC, "
        f"{len(report.bucket_starts)} bucket{'s' if len(report.bucket_starts) != 1 else ''} "
        f"of {span}."
    )
    if not report.groups:
        st.info(
            "No request in this window. Choose a longer window or other models, or send a few "
            "prompts from the Sandbox.",
            icon=":material/search_off:",
        )
        st.page_link("pages/sandbox.py", label="Open the Sandbox", icon=":material/arrow_forward:")
        return
    _headline(report)
    noun = NOUN[report.group_by]
    left, right = st.columns(2)
    with left:
        st.subheader("Requests over time")
        st.altair_chart(_over_time(report, "Requests"), width="stretch")
    with right:
        st.subheader("Tokens over time")
        st.altair_chart(_over_time(report, "Tokens"), width="stretch")
    st.subheader(f"Latency per {noun.lower()}")
    ttft, total = st.columns(2)
    with ttft:
        _latency_chart(report, "ttft", "Time to first token (ms)")
    with total:
        _latency_chart(report, "latency", "Total latency (ms)")
    st.subheader("Figures")
    st.dataframe(
        figures_table(report),
        hide_index=True,
        column_config=_column_config(report),
    )
    st.caption(DEFINITIONS)
    if report.has_votes:
        st.caption(WIN_RATE_NOTE)
    with st.expander("Every bucket"):
        st.dataframe(buckets_table(report), hide_index=True, column_config=_column_config(report))
    st.download_button(
        "Download CSV",
        usage.to_csv(report),
        file_name=f"plugboard-usage-{report.start:%Y%m%dT%H%M}Z-{report.end:%Y%m%dT%H%M}Z.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="usage.csv",
    )


def _headline(report: UsageReport) -> None:
    totals = [g.total for g in report.groups]
    requests = sum(f.requests for f in totals)
    errors = sum(f.errors for f in totals)
    cols = st.columns(4)
    cols[0].metric("Requests", f"{requests:,}")
    cols[1].metric(
        "Errors", f"{errors:,}", help=f"{errors / requests:.1%} of requests" if requests else None
    )
    cols[2].metric("Prompt tokens", f"{sum(f.prompt_tokens for f in totals):,}")
    cols[3].metric("Completion tokens", f"{sum(f.completion_tokens for f in totals):,}")


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            value = seconds / size
            text = f"{value:.0f}" if math.isclose(value, round(value)) else f"{value:.1f}"
            return f"{text} {unit}{'s' if unit == 'day' and text != '1' else ''}"
    return f"{seconds:.0f} s"


def _over_time(report: UsageReport, measure: str) -> alt.Chart:
    """Stacked bars, one per bucket spanning its time, one colour per model (or provider)."""
    edges = [*report.bucket_starts, report.end]
    noun = NOUN[report.group_by]
    rows = [
        {
            noun: group.label,
            "start": edges[i],
            "end": edges[i + 1],
            "Bucket (UTC)": f"{edges[i]:{TIME_FORMAT}}",
            "Requests": figures.requests,
            "Tokens": figures.tokens,
        }
        for group in report.groups
        for i, figures in enumerate(group.buckets)
    ]
    chart: alt.Chart = (
        alt.Chart(pd.DataFrame(rows))
        .transform_stack(
            stack=measure, groupby=["start"], as_=["low", "high"], sort=[alt.SortField(noun)]
        )
        .mark_bar(stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("start:T", title="Time (UTC)", scale=alt.Scale(type="utc")),
            x2="end:T",
            y=alt.Y("low:Q", title=measure),
            y2="high:Q",
            color=alt.Color(f"{noun}:N", title=noun),
            tooltip=[f"{noun}:N", "Bucket (UTC):N", alt.Tooltip(f"{measure}:Q", format=",")],
        )
    )
    return chart


def _latency_chart(report: UsageReport, metric: str, title: str) -> None:
    noun = NOUN[report.group_by]
    rows = []
    for group in report.groups:
        median = getattr(group.total, f"{metric}_median_ms")
        p95 = getattr(group.total, f"{metric}_p95_ms")
        if median is None:
            continue
        rows += [
            {noun: group.label, "Statistic": "median", "ms": median},
            {noun: group.label, "Statistic": "p95", "ms": p95},
        ]
    st.markdown(f"**{title}**")
    if not rows:
        st.caption("No successful request in this window.")
        return
    chart = (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            y=alt.Y(f"{noun}:N", title=None),
            yOffset=alt.YOffset("Statistic:N", sort=["median", "p95"]),
            x=alt.X("ms:Q", title="milliseconds"),
            color=alt.Color("Statistic:N", sort=["median", "p95"], title=None),
            tooltip=[f"{noun}:N", "Statistic:N", alt.Tooltip("ms:Q", format=",.0f")],
        )
    )
    st.altair_chart(chart, width="stretch")


# --- tables -------------------------------------------------------------------------------------


def _row(figures: Figures) -> dict[str, Any]:
    return {
        "Requests": figures.requests,
        "Errors": figures.errors,
        "Errors by kind": ", ".join(f"{k} × {n}" for k, n in figures.errors_by_kind.items()),
        "Stopped": figures.stopped,
        "Prompt tokens": figures.prompt_tokens,
        "Completion tokens": figures.completion_tokens,
        "TTFT median (ms)": figures.ttft_median_ms,
        "TTFT p95 (ms)": figures.ttft_p95_ms,
        "Latency median (ms)": figures.latency_median_ms,
        "Latency p95 (ms)": figures.latency_p95_ms,
        "Tokens/s": figures.tokens_per_second,
    }


def figures_table(report: UsageReport) -> pd.DataFrame:
    """One row per model (or provider): every figure over the whole window."""
    rows = []
    for group in report.groups:
        row = {NOUN[report.group_by]: group.label, **_row(group.total)}
        if report.has_votes:
            win = group.win_rate
            row["Win rate"] = win.rate if win else None
            row["Wins"] = win.wins if win else None
            row["Comparisons"] = win.comparisons if win else None
        rows.append(row)
    return pd.DataFrame(rows)


def buckets_table(report: UsageReport) -> pd.DataFrame:
    """One row per model (or provider) and bucket, empty buckets included."""
    return pd.DataFrame(
        [
            {
                NOUN[report.group_by]: group.label,
                "Bucket start (UTC)": f"{start:{TIME_FORMAT}}",
                **_row(figures),
            }
            for group in report.groups
            for start, figures in zip(report.bucket_starts, group.buckets, strict=True)
        ]
    )


def _column_config(report: UsageReport) -> dict[str, Any]:
    ms = st.column_config.NumberColumn(format="%.0f")
    return {
        "TTFT median (ms)": ms,
        "TTFT p95 (ms)": ms,
        "Latency median (ms)": ms,
        "Latency p95 (ms)": ms,
        "Tokens/s": st.column_config.NumberColumn(format="%.1f"),
        "Win rate": st.column_config.NumberColumn(format="percent", help=WIN_RATE_NOTE),
    }
