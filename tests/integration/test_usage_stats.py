"""Usage statistics (core.usage.usage_report) against figures worked out by hand, on SQLite and
PostgreSQL.

The data set: a 4-hour window, 2026-01-01 00:00–04:00 UTC, cut into four 1-hour buckets.

    Provider One: Alpha (10 requests in the window, 2 outside), Beta (21 requests, all in 02:xx)
    Provider Two: Gamma (1 request), Old (1 request; the card is deleted afterwards)

Percentiles are nearest-rank: the value at rank ceil(p/100 * n), counting from 1, over the
successful requests; tokens per second = sum of completion tokens * 1000 / sum of latency_ms
over successful requests with completion tokens. Every expected number below is written out
literally, with its working in a comment.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, delete

from core import usage
from core.tables import Conversation, Message, ModelCard, Provider, UsageEvent, Vote
from core.usage import Figures, UsageReport, WinRate
from core.workspace import Workspace

START = datetime(2026, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=4)
EMPTY = Figures()


def at(hh: int, mm: int = 0, ss: int = 0, us: int = 0) -> datetime:
    return START + timedelta(hours=hh, minutes=mm, seconds=ss, microseconds=us)


@dataclass(frozen=True)
class Ids:
    one: int
    two: int
    alpha: int
    beta: int
    gamma: int


def _event(
    when: datetime,
    card: ModelCard,
    provider: Provider,
    *,
    status: str = "ok",
    error_kind: str | None = None,
    prompt: int | None = None,
    completion: int | None = None,
    ttft: float | None = None,
    latency: float | None = None,
) -> UsageEvent:
    return UsageEvent(
        created_at=when,
        model_id=card.id,
        model_name=card.display_name,
        provider_id=provider.id,
        provider_name=provider.name,
        kind="openai_compat",
        status=status,
        error_kind=error_kind,
        prompt_tokens=prompt,
        completion_tokens=completion,
        ttft_ms=ttft,
        latency_ms=latency,
    )


def _turn(
    conversation_id: int, turn: int, lanes: list[ModelCard], vote: str | None, when: datetime
) -> list[Message | Vote]:
    """One compare turn: the prompt in lane 0, one reply per lane, and a preference vote."""
    rows: list[Message | Vote] = [
        Message(conversation_id=conversation_id, turn=turn, lane=0, role="user", content="q")
    ]
    rows += [
        Message(
            conversation_id=conversation_id,
            turn=turn,
            lane=lane,
            role="assistant",
            content="a",
            model_id=card.id,
            model_name=card.display_name,
        )
        for lane, card in enumerate(lanes)
    ]
    if vote is not None:
        rows.append(
            Vote(
                conversation_id=conversation_id,
                turn=turn,
                kind="preference",
                choice=vote,
                created_at=when,
            )
        )
    return rows


def _arrange(ws: Workspace) -> Ids:
    with ws.session() as s:
        one, two = Provider(name="Provider One", kind="x"), Provider(name="Provider Two", kind="x")
        s.add_all([one, two])
        s.flush()
        assert one.id and two.id
        alpha = ModelCard(provider_id=one.id, display_name="Alpha")
        beta = ModelCard(provider_id=one.id, display_name="Beta")
        gamma = ModelCard(provider_id=two.id, display_name="Gamma")
        old = ModelCard(provider_id=two.id, display_name="Old")
        s.add_all([alpha, beta, gamma, old])
        s.flush()
        assert alpha.id and beta.id and gamma.id and old.id

        def a(when: datetime, **kw: object) -> UsageEvent:
            return _event(when, alpha, one, **kw)  # type: ignore[arg-type]

        s.add_all(
            [
                # bucket 0 (00:00–01:00), the first one exactly on the window's start
                a(at(0), prompt=10, completion=20, ttft=100, latency=1000),
                a(at(0, 30), prompt=10, completion=30, ttft=300, latency=2000),
                a(at(0, 59, 59, 999_999), prompt=10, completion=10, ttft=200, latency=500),
                # bucket 1 (01:00–02:00), the first one exactly on its start edge
                a(at(1), prompt=5, completion=40, ttft=400, latency=4000),
                a(at(1, 10), status="error", error_kind="http_429", latency=50),
                a(at(1, 20), status="error", error_kind="timeout", prompt=5, latency=30000),
                a(at(1, 30), status="error", error_kind="http_429", latency=60),
                a(at(1, 40), prompt=5, completion=60, ttft=600, latency=3000),
                a(at(1, 50), status="stopped", prompt=5, completion=7, ttft=250, latency=900),
                # bucket 2 (02:00–03:00): no Alpha request
                # bucket 3 (03:00–04:00)
                a(at(3, 59, 59), prompt=1, completion=2, ttft=50, latency=200),
                # outside: exactly on the end (excluded) and a microsecond before the start
                a(END, prompt=1000, completion=1000, ttft=1, latency=1),
                a(START - timedelta(microseconds=1), prompt=1000, completion=1000, latency=1),
            ]
        )
        # Beta: 21 successful requests in bucket 2, i = 1..21: ttft i ms, latency 10·i ms
        s.add_all(
            _event(at(2, i), beta, one, prompt=1, completion=2, ttft=i, latency=10 * i)
            for i in range(1, 22)
        )
        s.add(_event(at(0, 15), gamma, two, prompt=100, completion=50, ttft=1000, latency=5000))
        # Old: an auth error exactly on bucket 3's start edge
        s.add(_event(at(3), old, two, status="error", error_kind="auth", latency=10))

        compare = Conversation(title="votes", mode="compare")
        s.add(compare)
        s.flush()
        assert compare.id
        c, inside = compare.id, at(2)
        turns = [
            _turn(c, 0, [alpha, beta, gamma], "A", inside),  # Alpha wins over Beta and Gamma
            _turn(c, 1, [alpha, beta], "tie", inside),  # a comparison, nobody wins
            _turn(c, 2, [alpha, beta], "all_bad", inside),  # the same
            _turn(c, 3, [beta, alpha, alpha], "C", inside),  # Alpha twice: one comparison, won
            _turn(c, 4, [alpha, alpha], "B", inside),  # only Alpha: not a comparison of models
            _turn(c, 5, [alpha, beta], None, inside),  # not voted
            _turn(c, 6, [beta, gamma], "B", inside),  # Gamma wins over Beta
            _turn(c, 7, [alpha, beta], "B", START - timedelta(seconds=1)),  # voted before
            _turn(c, 8, [old, beta], "A", inside),  # Old wins, and is deleted below
        ]
        for rows in turns:
            s.add_all(rows)
        s.flush()
        reply = turns[0][1]  # a 👍 on a reply is not a preference vote
        s.add(Vote(conversation_id=c, turn=0, kind="rating", choice="up", message_id=reply.id))
        ids = Ids(one.id, two.id, alpha.id, beta.id, gamma.id)
    with ws.session() as s:  # deleting the card keeps its events and messages, without an id
        s.exec(delete(ModelCard).where(col(ModelCard.id) == old.id))
    return ids


@pytest.fixture
def ids(ws: Workspace) -> Ids:
    return _arrange(ws)


@pytest.fixture
def ws(database_url: str, make_workspace: Callable[..., Workspace]) -> Workspace:
    return make_workspace(database_url, seed=False)


def report(ws: Workspace, **kw: object) -> UsageReport:
    return usage.usage_report(ws, start=START, end=END, buckets=4, **kw)  # type: ignore[arg-type]


def by_label(r: UsageReport) -> dict[str, usage.GroupUsage]:
    return {g.label: g for g in r.groups}


# --- per model ------------------------------------------------------------------------------


ALPHA_BUCKETS = (
    Figures(
        requests=3,
        prompt_tokens=30,
        completion_tokens=60,
        ttft_median_ms=200.0,  # sorted 100 200 300, n=3: rank ceil(1.5)=2
        ttft_p95_ms=300.0,  # rank ceil(2.85)=3
        latency_median_ms=1000.0,  # sorted 500 1000 2000
        latency_p95_ms=2000.0,
        tokens_per_second=60 * 1000 / 3500,  # 60 tokens over 1000+2000+500 ms
    ),
    Figures(
        requests=6,
        errors=3,
        stopped=1,
        errors_by_kind={"http_429": 2, "timeout": 1},
        prompt_tokens=20,  # 5 + 5 + 5 + 5 (two errors report none)
        completion_tokens=107,  # 40 + 60 + 7 (the stopped reply counts its tokens)
        ttft_median_ms=400.0,  # successful only: 400 600, n=2 (even): rank 1, the lower one
        ttft_p95_ms=600.0,  # rank ceil(1.9)=2
        latency_median_ms=3000.0,  # 3000 4000
        latency_p95_ms=4000.0,
        tokens_per_second=100 * 1000 / 7000,  # (40+60) over (4000+3000) ms; stopped left out
    ),
    EMPTY,
    Figures(
        requests=1,
        prompt_tokens=1,
        completion_tokens=2,
        ttft_median_ms=50.0,
        ttft_p95_ms=50.0,
        latency_median_ms=200.0,
        latency_p95_ms=200.0,
        tokens_per_second=10.0,  # 2 tokens in 200 ms
    ),
)
ALPHA_TOTAL = Figures(
    requests=10,
    errors=3,
    stopped=1,
    errors_by_kind={"http_429": 2, "timeout": 1},
    prompt_tokens=51,
    completion_tokens=169,
    ttft_median_ms=200.0,  # 50 100 200 300 400 600, n=6: rank 3
    ttft_p95_ms=600.0,  # rank ceil(5.7)=6
    latency_median_ms=1000.0,  # 200 500 1000 2000 3000 4000
    latency_p95_ms=4000.0,
    tokens_per_second=162 * 1000 / 10700,  # (60+100+2) over (3500+7000+200) ms
)
BETA_TOTAL = Figures(
    requests=21,
    prompt_tokens=21,
    completion_tokens=42,
    ttft_median_ms=11.0,  # 1..21, n=21: rank ceil(10.5)=11
    ttft_p95_ms=20.0,  # rank ceil(19.95)=20: not the maximum (21)
    latency_median_ms=110.0,
    latency_p95_ms=200.0,
    tokens_per_second=42 * 1000 / 2310,  # 10+20+…+210 = 2310 ms
)


def test_figures_per_model_and_bucket(ws: Workspace, ids: Ids) -> None:
    r = report(ws)
    assert r.bucket_starts == (at(0), at(1), at(2), at(3))
    assert r.bucket_span == timedelta(hours=1)
    assert [(g.label, g.id, g.key) for g in r.groups] == [  # most requests first
        ("Beta", ids.beta, f"model:{ids.beta}"),
        ("Alpha", ids.alpha, f"model:{ids.alpha}"),
        ("Gamma", ids.gamma, f"model:{ids.gamma}"),
        ("Old (deleted)", None, "model:name:Old"),
    ]
    groups = by_label(r)
    alpha = groups["Alpha"]
    for got, expected in zip(alpha.buckets, ALPHA_BUCKETS, strict=True):
        assert_figures(got, expected)
    assert_figures(alpha.total, ALPHA_TOTAL)
    assert_figures(groups["Beta"].total, BETA_TOTAL)
    assert groups["Beta"].buckets[:2] == (EMPTY, EMPTY) and groups["Beta"].buckets[3] == EMPTY
    assert_figures(groups["Beta"].buckets[2], BETA_TOTAL)
    gamma = Figures(
        requests=1,
        prompt_tokens=100,
        completion_tokens=50,
        ttft_median_ms=1000.0,
        ttft_p95_ms=1000.0,
        latency_median_ms=5000.0,
        latency_p95_ms=5000.0,
        tokens_per_second=10.0,
    )
    assert groups["Gamma"].buckets == (gamma, EMPTY, EMPTY, EMPTY)
    # an error only (exactly on bucket 3's start): counted, but no latency or speed figures
    old = Figures(requests=1, errors=1, errors_by_kind={"auth": 1})
    assert groups["Old (deleted)"].buckets == (EMPTY, EMPTY, EMPTY, old)
    assert groups["Old (deleted)"].total == old
    assert r.requests == 33


def assert_figures(got: Figures, expected: Figures) -> None:
    """Equal; tokens per second (a division) to 1e-9."""
    if expected.tokens_per_second is None:
        assert got == expected
    else:
        assert got.tokens_per_second == pytest.approx(expected.tokens_per_second, rel=1e-9)
        assert got == replace(expected, tokens_per_second=got.tokens_per_second)


def test_bucket_edges_with_three_uneven_buckets(ws: Workspace, ids: Ids) -> None:
    r = usage.usage_report(ws, start=START, end=END, buckets=3)  # 1 h 20 min each
    assert r.bucket_starts == (at(0), at(1, 20), at(2, 40))
    alpha, beta = by_label(r)["Alpha"], by_label(r)["Beta"]
    # 00:00 00:30 00:59:59.999999 01:00 01:10 | 01:20 (on the edge) 01:30 01:40 01:50 | 03:59:59
    assert [b.requests for b in alpha.buckets] == [5, 4, 1]
    assert [b.errors_by_kind for b in alpha.buckets] == [
        {"http_429": 1},
        {"http_429": 1, "timeout": 1},
        {},
    ]
    assert [b.requests for b in beta.buckets] == [0, 21, 0]  # 02:01…02:21
    assert_figures(alpha.total, ALPHA_TOTAL)  # the totals do not depend on the buckets


def test_buckets_that_do_not_divide_the_window_evenly(ws: Workspace, ids: Ids) -> None:
    r = usage.usage_report(ws, start=START, end=END, buckets=7)
    span = timedelta(microseconds=2_057_142_857)  # 4 h / 7, to the microsecond
    assert r.bucket_starts == tuple(START + i * span for i in range(7))
    assert sum(g.total.requests for g in r.groups) == 33
    # edges at 0, 34:17.1, 1:08:34.3, 1:42:51.4, 2:17:08.6, 2:51:25.7, 3:25:42.9
    assert [b.requests for b in by_label(r)["Alpha"].buckets] == [2, 2, 4, 1, 0, 0, 1]


def test_an_event_exactly_on_an_inner_edge_opens_the_next_bucket(ws: Workspace, ids: Ids) -> None:
    edge = START + (END - START) / 7 * 3
    with ws.session() as s:
        card, provider = s.get(ModelCard, ids.gamma), s.get(Provider, ids.two)
        assert card and provider
        s.add(_event(edge, card, provider, latency=1))
        s.add(_event(edge - timedelta(microseconds=1), card, provider, latency=1))
    r = usage.usage_report(ws, start=START, end=END, buckets=7)
    assert [b.requests for b in by_label(r)["Gamma"].buckets] == [1, 0, 1, 1, 0, 0, 0]


def test_an_empty_window_has_no_groups_and_empty_buckets(ws: Workspace, ids: Ids) -> None:
    r = usage.usage_report(
        ws, start=END + timedelta(days=1), end=END + timedelta(days=2), buckets=24
    )
    assert r.groups == () and r.requests == 0 and not r.has_votes
    assert len(r.bucket_starts) == 24 and r.bucket_starts[1] - r.bucket_starts[0] == timedelta(
        hours=1
    )


def test_nothing_recorded_yet(ws: Workspace) -> None:
    assert not usage.has_usage(ws)
    assert report(ws).groups == ()


# --- per provider ---------------------------------------------------------------------------


def test_figures_per_provider(ws: Workspace, ids: Ids) -> None:
    r = report(ws, group_by="provider")
    assert [(g.label, g.key) for g in r.groups] == [
        ("Provider One", f"provider:{ids.one}"),
        ("Provider Two", f"provider:{ids.two}"),
    ]
    one, two = r.groups
    assert_figures(
        one.total,
        Figures(
            requests=31,
            errors=3,
            stopped=1,
            errors_by_kind={"http_429": 2, "timeout": 1},
            prompt_tokens=72,
            completion_tokens=211,
            # 27 values: Beta's 1..21, then Alpha's 50 100 200 300 400 600
            ttft_median_ms=14.0,  # rank ceil(13.5)=14
            ttft_p95_ms=400.0,  # rank ceil(25.65)=26: 21 + (50 100 200 300 400)
            # 10 20 … 190 (ranks 1–19), 200 200, 210, 500 1000 2000 3000 4000
            latency_median_ms=140.0,
            latency_p95_ms=3000.0,  # rank 26
            tokens_per_second=204 * 1000 / 13010,  # (162+42) over (10700+2310) ms
        ),
    )
    assert_figures(one.buckets[2], BETA_TOTAL)
    assert_figures(one.buckets[0], ALPHA_BUCKETS[0])
    assert two.total == Figures(
        requests=2,
        errors=1,
        errors_by_kind={"auth": 1},
        prompt_tokens=100,
        completion_tokens=50,
        ttft_median_ms=1000.0,
        ttft_p95_ms=1000.0,
        latency_median_ms=5000.0,
        latency_p95_ms=5000.0,
        tokens_per_second=10.0,
    )
    assert [b.requests for b in two.buckets] == [1, 0, 0, 1]
    assert not r.has_votes  # win rates are per model


def test_a_deleted_provider_keeps_its_figures_under_its_name(ws: Workspace, ids: Ids) -> None:
    with ws.session() as s:
        s.exec(delete(Provider).where(col(Provider.id) == ids.two))
    r = report(ws, group_by="provider")
    assert [(g.label, g.total.requests) for g in r.groups] == [
        ("Provider One", 31),
        ("Provider Two (deleted)", 2),
    ]


def test_filter_by_model(ws: Workspace, ids: Ids) -> None:
    only_alpha = report(ws, model_ids=[ids.alpha])
    assert [g.label for g in only_alpha.groups] == ["Alpha"]
    assert_figures(only_alpha.groups[0].total, ALPHA_TOTAL)
    assert only_alpha.groups[0].win_rate == WinRate(wins=2, comparisons=4)
    per_provider = report(ws, group_by="provider", model_ids=[ids.gamma, ids.beta])
    assert [(g.label, g.total.requests) for g in per_provider.groups] == [
        ("Provider One", 21),
        ("Provider Two", 1),
    ]
    assert report(ws, model_ids=[]).groups == ()


# --- win rate -------------------------------------------------------------------------------


def test_win_rate_from_compare_votes(ws: Workspace, ids: Ids) -> None:
    r = report(ws)
    assert r.has_votes
    wins = {g.label: g.win_rate for g in r.groups}
    assert wins == {
        # turn 0 won; 1 tie and 2 all-bad: no win; 3 won once (two lanes); 4 left out (only
        # Alpha); 5 not voted; 7 voted before the window
        "Alpha": WinRate(wins=2, comparisons=4),
        "Beta": WinRate(wins=0, comparisons=6),  # turns 0 1 2 3 6 8
        "Gamma": WinRate(wins=1, comparisons=2),  # turns 0 and 6
        "Old (deleted)": WinRate(wins=1, comparisons=1),  # turn 8, matched by name
    }
    assert wins["Alpha"] is not None and wins["Alpha"].rate == 0.5


def test_votes_alone_make_a_group_when_the_window_has_no_request(ws: Workspace, ids: Ids) -> None:
    with ws.session() as s:
        s.exec(delete(UsageEvent).where(col(UsageEvent.model_id) == ids.gamma))
    gamma = by_label(report(ws))["Gamma"]
    assert gamma.total == EMPTY and gamma.buckets == (EMPTY,) * 4
    assert gamma.win_rate == WinRate(wins=1, comparisons=2)


# --- CSV and arguments ----------------------------------------------------------------------


def test_csv_has_every_bucket_and_a_total_per_group(ws: Workspace, ids: Ids) -> None:
    rows = list(csv.DictReader(io.StringIO(usage.to_csv(report(ws)))))
    assert list(rows[0]) == [
        "model",
        "scope",
        "period_start_utc",
        "period_end_utc",
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
        "errors:auth",
        "errors:http_429",
        "errors:timeout",
        "wins",
        "comparisons",
        "win_rate",
    ]
    assert len(rows) == 4 * 5  # four groups, four buckets and a total each
    alpha = [r for r in rows if r["model"] == "Alpha"]
    assert [(r["scope"], r["period_start_utc"], r["requests"]) for r in alpha] == [
        ("bucket", "2026-01-01T00:00:00Z", "3"),
        ("bucket", "2026-01-01T01:00:00Z", "6"),
        ("bucket", "2026-01-01T02:00:00Z", "0"),
        ("bucket", "2026-01-01T03:00:00Z", "1"),
        ("total", "2026-01-01T00:00:00Z", "10"),
    ]
    assert alpha[2]["latency_median_ms"] == "" and alpha[2]["tokens_per_second"] == ""
    assert {k: v for k, v in alpha[4].items() if k != "model"} == {
        "scope": "total",
        "period_start_utc": "2026-01-01T00:00:00Z",
        "period_end_utc": "2026-01-01T04:00:00Z",
        "requests": "10",
        "errors": "3",
        "stopped": "1",
        "prompt_tokens": "51",
        "completion_tokens": "169",
        "ttft_median_ms": "200.000",
        "ttft_p95_ms": "600.000",
        "latency_median_ms": "1000.000",
        "latency_p95_ms": "4000.000",
        "tokens_per_second": "15.140",  # 162000 / 10700
        "errors:auth": "0",
        "errors:http_429": "2",
        "errors:timeout": "1",
        "wins": "2",
        "comparisons": "4",
        "win_rate": "0.5000",
    }


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"buckets": 0}, "buckets must be between 1 and 500"),
        ({"buckets": 501}, "buckets must be between 1 and 500"),
        ({"end": START}, "must end after it starts"),
        ({"start": START.replace(tzinfo=None)}, "timezone-aware"),
        ({"group_by": "kind"}, "group_by is 'model' or 'provider'"),
    ],
)
def test_bad_arguments_are_refused(ws: Workspace, kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"start": START, "end": END, "buckets": 4, **kw}
    with pytest.raises(ValueError, match=message):
        usage.usage_report(ws, **args)  # type: ignore[arg-type]


def test_other_time_zones_are_converted_to_utc(ws: Workspace, ids: Ids) -> None:
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")  # UTC+1 in January
    r = usage.usage_report(ws, start=START.astimezone(paris), end=END.astimezone(paris), buckets=4)
    assert r.start == START and r.start.tzinfo is UTC and r.requests == 33
