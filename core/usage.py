"""Usage figures: one model card's summary (Models page) and the Usage page's report.

`usage_report()` aggregates a time window per model (or per provider) and per time bucket in
the database: GROUP BY over `usage_event` for counts, errors and tokens, the same SQL on
SQLite and PostgreSQL. Percentiles need every value in order, which SQLite has no aggregate
for: the database sends each successful request's two timings with its bucket and Python
takes the nearest ranks (see `_timings_query`).

Definitions (the page and the CSV use the same ones):

* **Buckets**: the window [start, end) is cut into `buckets` equal spans of
  (end − start) / buckets (rounded to the microsecond); bucket i covers
  [start + i·span, start + (i+1)·span), the last one ends at `end`. An event exactly on an edge
  belongs to the bucket that starts there. Empty buckets are reported with zeros.
* **Requests**: every request sent (one `UsageEvent` each): successful, failed or stopped.
  **Errors**: the requests that ended with an error; `errors_by_kind` splits them by
  `error_kind` (they add up to `errors`). **Stopped**: stopped by the person mid-reply.
* **Tokens**: prompt and completion tokens summed over every request (a failed or stopped
  request counts what it used; some figures are estimates, as on the Models page).
* **TTFT and latency percentiles** (time to first token; total latency = sending the request
  → last token): over successful requests only, by **nearest rank**: the p-th percentile of n
  sorted values is the value at rank ⌈p/100 · n⌉ (counting from 1). The median is p = 50,
  so for an even n it is the lower of the two middle values: always a measured value, never an
  average of two.
* **Tokens per second**: Σ completion tokens / Σ generation time, over successful requests
  that report completion tokens, where a request's generation time is its total latency
  (request sent → last token, the time to first token included). Not `latency − TTFT`:
  connection kinds that return the whole reply at once (Custom API, non-streaming servers)
  have no measurable streaming phase and would show absurd rates. A ratio of sums, so long
  replies weigh more than one-word ones.
* **Win rate** (per model, from compare votes cast in the window): a preference vote on a
  compare turn is one comparison for every *distinct* model with a reply in that turn (a
  failed reply too); the model whose lane was chosen gets a win. A tie or "all bad" is a
  comparison without a winner. The same model in two lanes takes part once (and wins once
  if either lane is chosen); a turn where every lane ran the same model compares settings,
  not models, and is left out. win rate = wins / comparisons. Per provider: no win rate.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    Subquery,
    and_,
    case,
    func,
    literal_column,
)
from sqlalchemy import select as sa_select  # sqlmodel.select stops at four columns
from sqlalchemy.orm import Mapped
from sqlmodel import Session, col, select

from core.compare import LETTERS
from core.tables import Message, ModelCard, Provider, UsageEvent, Vote
from core.workspace import Workspace

RECENT = 500  # the window "recent usage" looks at
MAX_BUCKETS = 500
GroupBy = Literal["model", "provider"]
GROUPINGS: tuple[GroupBy, ...] = ("model", "provider")

# --- one card (Models page) -------------------------------------------------------------------


@dataclass(frozen=True)
class LastError:
    kind: str
    message: str
    at: datetime


@dataclass(frozen=True)
class CardUsage:
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    median_latency_ms: float | None
    median_ttft_ms: float | None
    last_used: datetime | None
    last_error: LastError | None


def card_usage(ws: Workspace, model_id: int) -> CardUsage:
    """Totals over all requests; medians over the most recent ones."""
    with ws.session() as session:
        requests, errors, prompt, completion, last_used = session.execute(
            sa_select(
                func.count(col(UsageEvent.id)),
                func.count(col(UsageEvent.error_kind)),
                func.coalesce(func.sum(UsageEvent.prompt_tokens), 0),
                func.coalesce(func.sum(UsageEvent.completion_tokens), 0),
                func.max(UsageEvent.created_at),
            ).where(col(UsageEvent.model_id) == model_id)
        ).one()
        recent = session.exec(
            select(UsageEvent.latency_ms, UsageEvent.ttft_ms)
            .where(UsageEvent.model_id == model_id, UsageEvent.status == "ok")
            .order_by(col(UsageEvent.id).desc())
            .limit(RECENT)
        ).all()
        failed = session.exec(
            select(Message)
            .where(Message.model_id == model_id, Message.status == "error")
            .order_by(col(Message.id).desc())
            .limit(1)
        ).first()
    latencies = [lat for lat, _ in recent if lat is not None]
    ttfts = [t for _, t in recent if t is not None]
    return CardUsage(
        requests=requests,
        errors=errors,
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        median_latency_ms=statistics.median(latencies) if latencies else None,
        median_ttft_ms=statistics.median(ttfts) if ttfts else None,
        last_used=last_used,
        last_error=LastError(
            failed.error_kind or "error", failed.error_message or "", failed.created_at
        )
        if failed
        else None,
    )


# --- the Usage page's report ------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """One model's (or provider's) figures over one bucket, or over the whole window."""

    requests: int = 0
    errors: int = 0
    stopped: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_median_ms: float | None = None
    ttft_p95_ms: float | None = None
    latency_median_ms: float | None = None
    latency_p95_ms: float | None = None
    tokens_per_second: float | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class WinRate:
    wins: int
    comparisons: int  # always at least 1

    @property
    def rate(self) -> float:
        return self.wins / self.comparisons


@dataclass(frozen=True)
class GroupUsage:
    """A model (or provider) over the window: one `Figures` per bucket and the totals."""

    key: str  # "model:3"; "model:name:Old card" once the card is deleted (its id is gone)
    id: int | None
    label: str
    buckets: tuple[Figures, ...]  # aligned with UsageReport.bucket_starts
    total: Figures
    win_rate: WinRate | None = None


@dataclass(frozen=True)
class UsageReport:
    start: datetime
    end: datetime
    group_by: GroupBy
    bucket_starts: tuple[datetime, ...]
    groups: tuple[GroupUsage, ...]  # most requests first

    @property
    def bucket_span(self) -> timedelta:
        return (self.end - self.start) / len(self.bucket_starts)

    @property
    def requests(self) -> int:
        return sum(g.total.requests for g in self.groups)

    @property
    def has_votes(self) -> bool:
        return any(g.win_rate is not None for g in self.groups)


def has_usage(ws: Workspace) -> bool:
    """Was any request ever recorded? (The Usage page's empty state.)"""
    with ws.session() as session:
        return session.exec(select(UsageEvent.id).limit(1)).first() is not None


def data_version(ws: Workspace) -> tuple[Any, ...]:
    """Changes whenever a report could: a usage event or vote added or deleted, a card or
    connection added, renamed or deleted (cheap: counts and maxima over primary keys)."""
    with ws.session() as session:
        return tuple(
            tuple(session.execute(sa_select(func.count(), func.max(table.id))).one())
            for table in (UsageEvent, Vote)
        ) + tuple(
            tuple(session.execute(sa_select(func.count(), func.max(table.updated_at))).one())
            for table in (ModelCard, Provider)
        )


def bucket_starts(start: datetime, end: datetime, buckets: int) -> list[datetime]:
    """The start of each of `buckets` equal spans of [start, end)."""
    span = (end - start) / buckets
    return [start + i * span for i in range(buckets)]


def usage_report(
    ws: Workspace,
    *,
    start: datetime,
    end: datetime,
    buckets: int,
    group_by: GroupBy = "model",
    model_ids: Sequence[int] | None = None,
) -> UsageReport:
    """Figures per model (or provider) and per time bucket of [start, end), and in total.

    `model_ids` keeps the requests of those model cards only (None: every model). Times must be
    timezone-aware; the report is in UTC. See the module docstring for the definitions.
    """
    start, end = _utc(start, "start"), _utc(end, "end")
    if group_by not in GROUPINGS:
        raise ValueError(f"group_by is 'model' or 'provider', not {group_by!r}")
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets must be between 1 and {MAX_BUCKETS}, not {buckets}")
    if end - start < timedelta(microseconds=buckets):
        raise ValueError("The window must end after it starts (at least 1 µs a bucket).")
    starts = bucket_starts(start, end, buckets)
    ids = None if model_ids is None else list(model_ids)
    events = _events(group_by, starts, end, ids)
    groups: dict[_Key, _Group] = {}

    def group(key: _Key) -> _Group:
        if key not in groups:
            groups[key] = _Group(buckets)
        return groups[key]

    with ws.session() as session:
        for row in session.execute(_totals_query(events)):
            group((row.gid, row.gname)).add_counts(row)
        # Core, not ORM, execution: ~100,000 plain rows, no ORM row processing each.
        for gid, gname, bucket, ttft, latency in session.connection().execute(
            _timings_query(events)
        ):
            ttfts, latencies = group((gid, gname)).samples
            if ttft is not None:
                ttfts[bucket].append(ttft)
            if latency is not None:
                latencies[bucket].append(latency)
        for found in groups.values():
            found.settle()
        wins = _win_rates(session, start, end) if group_by == "model" else {}
        if ids is not None:
            wins = {key: w for key, w in wins.items() if key[0] in ids}
        for key in wins:
            group(key)
        labels = _labels(session, group_by, [gid for gid, _ in groups if gid is not None])
    result = [
        GroupUsage(
            key=f"{group_by}:{gid}" if gid is not None else f"{group_by}:name:{gname}",
            id=gid,
            label=_label(labels, gid, gname or found.name),
            buckets=tuple(b.figures() for b in found.buckets),
            total=found.total(),
            win_rate=wins.get((gid, gname)),
        )
        for (gid, gname), found in groups.items()
    ]
    result.sort(key=lambda g: (-g.total.requests, g.label.casefold(), g.key))
    return UsageReport(start, end, group_by, tuple(starts), tuple(result))


def _utc(when: datetime, name: str) -> datetime:
    if when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got {when!r}")
    return when.astimezone(UTC)


# --- SQL ---------------------------------------------------------------------------------------

_Key = tuple[int | None, str | None]  # (card or provider id, name when the id is gone)
_METRICS = ("ttft_ms", "latency_ms")
PERCENTILES = (50, 95)


def _bucket_of(created: Mapped[datetime], starts: list[datetime]) -> ColumnElement[int]:
    """The bucket number of `created`: a binary search written as nested CASEs.

    Plain comparisons with the bucket edges (bound as datetimes, like the window itself), so
    it is exact and the same on SQLite (text timestamps) and PostgreSQL (timestamptz).
    """

    def index(lo: int, hi: int) -> ColumnElement[int]:
        if lo == hi:
            return literal_column(str(lo), Integer)
        mid = (lo + hi + 1) // 2
        return case((created < starts[mid], index(lo, mid - 1)), else_=index(mid, hi))

    return index(0, len(starts) - 1)


def _events(
    group_by: GroupBy, starts: list[datetime], end: datetime, ids: list[int] | None
) -> Subquery:
    """The window's events with their group (id, or name once the id is gone) and bucket."""
    created = col(UsageEvent.created_at)
    if group_by == "model":
        gid, name = col(UsageEvent.model_id), col(UsageEvent.model_name)
    else:
        gid, name = col(UsageEvent.provider_id), col(UsageEvent.provider_name)
    query: Select[Any] = sa_select(
        gid.label("gid"),
        case((gid.is_(None), name)).label("gname"),
        name.label("name"),
        _bucket_of(created, starts).label("bucket"),
        col(UsageEvent.status).label("status"),
        col(UsageEvent.error_kind).label("error_kind"),
        col(UsageEvent.prompt_tokens).label("prompt_tokens"),
        col(UsageEvent.completion_tokens).label("completion_tokens"),
        col(UsageEvent.ttft_ms).label("ttft_ms"),
        col(UsageEvent.latency_ms).label("latency_ms"),
    ).where(created >= starts[0], created < end)
    if ids is not None:
        query = query.where(col(UsageEvent.model_id).in_(ids))
    return query.subquery("e")


def _totals_query(e: Subquery) -> Any:
    """Counts and sums per group, bucket and error kind (NULL: no error)."""
    timed = and_(e.c.status == "ok", e.c.completion_tokens.is_not(None), e.c.latency_ms > 0)
    keys = (e.c.gid, e.c.gname, e.c.bucket, e.c.error_kind)
    return sa_select(
        *keys,
        func.count().label("requests"),
        func.sum(case((e.c.status == "stopped", 1), else_=0)).label("stopped"),
        func.coalesce(func.sum(e.c.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(e.c.completion_tokens), 0).label("completion_tokens"),
        func.sum(case((timed, e.c.completion_tokens))).label("rate_tokens"),
        func.sum(case((timed, e.c.latency_ms))).label("rate_ms"),
        func.max(e.c.name).label("name"),
    ).group_by(*keys)


def _timings_query(e: Subquery) -> Any:
    """Each successful request's TTFT and latency, with its group and bucket.

    The nearest ranks are then taken in Python (`_Group.settle`): SQLite has no percentile
    aggregate, and ranking in SQL takes a window sort per metric and level — six sorts of
    the window, about four times the cost of shipping two floats a request
    (bench/usage_page.py). The database still filters the window and assigns the buckets.
    """
    return sa_select(e.c.gid, e.c.gname, e.c.bucket, e.c.ttft_ms, e.c.latency_ms).where(
        e.c.status == "ok"
    )


def nearest_rank(ordered: Sequence[float], p: int) -> float:
    """The p-th percentile of sorted values by nearest rank: the value at rank ⌈p·n/100⌉."""
    return ordered[(p * len(ordered) + 99) // 100 - 1]


def _win_rates(session: Session, start: datetime, end: datetime) -> dict[_Key, WinRate]:
    """Wins and comparisons per model from the preference votes cast in [start, end)."""
    chosen_lane = case(
        {letter: lane for lane, letter in enumerate(LETTERS)}, value=col(Vote.choice), else_=-1
    )
    model_id, model_name = col(Message.model_id), col(Message.model_name)
    took_part = (
        sa_select(
            col(Vote.id).label("vote_id"),
            model_id.label("gid"),
            case((model_id.is_(None), model_name)).label("gname"),
            func.max(case((col(Message.lane) == chosen_lane, 1), else_=0)).label("won"),
        )
        .join(
            Message,
            and_(
                col(Message.conversation_id) == col(Vote.conversation_id),
                col(Message.turn) == col(Vote.turn),
                col(Message.role) == "assistant",
            ),
        )
        .where(
            col(Vote.kind) == "preference",
            col(Vote.created_at) >= start,
            col(Vote.created_at) < end,
        )
        .group_by(col(Vote.id), model_id, case((model_id.is_(None), model_name)))
        .subquery("p")
    )
    counted = sa_select(
        took_part.c.gid,
        took_part.c.gname,
        took_part.c.won,
        func.count().over(partition_by=took_part.c.vote_id).label("models"),
    ).subquery("c")
    rows = session.execute(
        sa_select(
            counted.c.gid,
            counted.c.gname,
            func.sum(counted.c.won).label("wins"),
            func.count().label("comparisons"),
        )
        .where(counted.c.models >= 2)
        .group_by(counted.c.gid, counted.c.gname)
    )
    return {(r.gid, r.gname): WinRate(int(r.wins), int(r.comparisons)) for r in rows}


def _labels(session: Session, group_by: GroupBy, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    if group_by == "model":
        cards = session.exec(
            select(ModelCard.id, ModelCard.display_name).where(col(ModelCard.id).in_(ids))
        )
        return {i: name for i, name in cards if i is not None}
    providers = session.exec(select(Provider.id, Provider.name).where(col(Provider.id).in_(ids)))
    return {i: name for i, name in providers if i is not None}


def _label(labels: dict[int, str], gid: int | None, name: str) -> str:
    if gid is None:
        return f"{name or 'unknown'} (deleted)"
    return labels.get(gid) or name or f"#{gid}"


# --- adding up the grouped rows ----------------------------------------------------------------


class _Bucket:
    def __init__(self) -> None:
        self.requests = self.errors = self.stopped = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.errors_by_kind: dict[str, int] = {}
        self.rate_tokens = 0
        self.rate_ms = 0.0
        self.percentiles: dict[tuple[str, int], float] = {}  # (metric, p) -> ms

    def add(self, row: Any) -> None:
        self.requests += int(row.requests)
        if row.error_kind is not None:
            self.errors += int(row.requests)
            self.errors_by_kind[row.error_kind] = self.errors_by_kind.get(row.error_kind, 0) + int(
                row.requests
            )
        self.stopped += int(row.stopped)
        self.prompt_tokens += int(row.prompt_tokens)
        self.completion_tokens += int(row.completion_tokens)
        self.rate_tokens += int(row.rate_tokens or 0)
        self.rate_ms += float(row.rate_ms or 0.0)

    def figures(self) -> Figures:
        p = self.percentiles.get
        return Figures(
            requests=self.requests,
            errors=self.errors,
            stopped=self.stopped,
            errors_by_kind=dict(sorted(self.errors_by_kind.items())),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            ttft_median_ms=p(("ttft_ms", 50)),
            ttft_p95_ms=p(("ttft_ms", 95)),
            latency_median_ms=p(("latency_ms", 50)),
            latency_p95_ms=p(("latency_ms", 95)),
            tokens_per_second=self.rate_tokens * 1000 / self.rate_ms if self.rate_ms > 0 else None,
        )


def _set_percentiles(figures: _Bucket, metric: str, values: list[float]) -> None:
    if values:
        values.sort()
        for p in PERCENTILES:
            figures.percentiles[(metric, p)] = nearest_rank(values, p)


class _Group:
    def __init__(self, buckets: int) -> None:
        self.buckets = [_Bucket() for _ in range(buckets)]
        self.whole = _Bucket()
        self.name = ""
        # Per bucket: the TTFTs and the latencies of its successful requests (usage_report).
        self.samples: tuple[list[list[float]], list[list[float]]] = (
            [[] for _ in range(buckets)],
            [[] for _ in range(buckets)],
        )

    def add_counts(self, row: Any) -> None:
        self.buckets[row.bucket].add(row)
        self.whole.add(row)
        self.name = max(self.name, row.name or "")

    def settle(self) -> None:
        """The percentiles of every bucket and of the whole window, from the samples."""
        for metric, per_bucket in zip(_METRICS, self.samples, strict=True):
            every: list[float] = []
            for bucket, values in zip(self.buckets, per_bucket, strict=True):
                _set_percentiles(bucket, metric, values)
                every += values
            _set_percentiles(self.whole, metric, every)
        self.samples = ([], [])

    def total(self) -> Figures:
        return self.whole.figures()


# --- CSV ----------------------------------------------------------------------------------------

_FIGURE_COLUMNS = (
    "requests",
    "errors",
    "stopped",
    "prompt_tokens",
    "completion_tokens",
    "ttft_median_ms",
    "ttft_p95_ms",
    "latency_median_ms",
    "latency_p95_ms",
    "tokens_per_second",
)


def to_csv(report: UsageReport) -> str:
    """One row per group and bucket, then one `total` row per group; times in UTC (ISO 8601).

    Errors by kind get one `errors:<kind>` column each; win rate columns are filled on the
    total rows of models that took part in voted comparisons.
    """
    kinds = sorted({k for g in report.groups for k in g.total.errors_by_kind})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            report.group_by,
            "scope",
            "period_start_utc",
            "period_end_utc",
            *_FIGURE_COLUMNS,
            *(f"errors:{k}" for k in kinds),
            "wins",
            "comparisons",
            "win_rate",
        ]
    )
    edges = [*report.bucket_starts, report.end]
    for group in report.groups:
        for i, figures in enumerate(group.buckets):
            cells = _figure_cells(figures, kinds)
            writer.writerow(
                [group.label, "bucket", _iso(edges[i]), _iso(edges[i + 1]), *cells, "", "", ""]
            )
        win = group.win_rate
        writer.writerow(
            [group.label, "total", _iso(report.start), _iso(report.end)]
            + _figure_cells(group.total, kinds)
            + ([win.wins, win.comparisons, f"{win.rate:.4f}"] if win else ["", "", ""])
        )
    return out.getvalue()


def _figure_cells(figures: Figures, kinds: list[str]) -> list[object]:
    cells: list[object] = []
    for name in _FIGURE_COLUMNS:
        value = getattr(figures, name)
        cells.append("" if value is None else f"{value:.3f}" if isinstance(value, float) else value)
    return cells + [figures.errors_by_kind.get(k, 0) for k in kinds]


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
