"""Usage page: empty state, figures after some requests, grouping, filters, win rates, CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from core.tables import Conversation, Message, ModelCard, Provider, UsageEvent, Vote
from core.workspace import Workspace
from tests.app.conftest import App


@dataclass(frozen=True)
class Cards:
    fast: int
    slow: int


@pytest.fixture
def cards(ws: Workspace) -> Cards:
    """Two models on two providers, with requests in the last hour and a compare vote."""
    now = datetime.now(UTC)
    with ws.session() as s:
        north = Provider(name="North", kind="openai_compat", base_url="http://127.0.0.1:9/v1")
        south = Provider(name="South", kind="openai_compat", base_url="http://127.0.0.1:9/v1")
        s.add_all([north, south])
        s.flush()
        assert north.id and south.id
        fast = ModelCard(provider_id=north.id, display_name="Fast", remote_model="f")
        slow = ModelCard(provider_id=south.id, display_name="Slow", remote_model="s")
        s.add_all([fast, slow])
        s.flush()
        assert fast.id and slow.id

        def event(card: ModelCard, provider: Provider, minutes: int, **kw: Any) -> UsageEvent:
            return UsageEvent(
                created_at=now - timedelta(minutes=minutes),
                model_id=card.id,
                model_name=card.display_name,
                provider_id=provider.id,
                provider_name=provider.name,
                kind="openai_compat",
                **kw,
            )

        s.add_all(
            [  # Fast: latencies 100 200 300 (median 200, p95 300), 60 tokens over 600 ms
                event(
                    fast,
                    north,
                    5,
                    prompt_tokens=10,
                    completion_tokens=20,
                    ttft_ms=10.0,
                    latency_ms=100.0,
                ),
                event(
                    fast,
                    north,
                    15,
                    prompt_tokens=10,
                    completion_tokens=20,
                    ttft_ms=20.0,
                    latency_ms=200.0,
                ),
                event(
                    fast,
                    north,
                    25,
                    prompt_tokens=10,
                    completion_tokens=20,
                    ttft_ms=30.0,
                    latency_ms=300.0,
                ),
                event(fast, north, 35, status="error", error_kind="http_429", latency_ms=5.0),
                # Slow: one 4 s reply of 40 tokens (10 tokens/s), and one two days ago
                event(
                    slow,
                    south,
                    45,
                    prompt_tokens=7,
                    completion_tokens=40,
                    ttft_ms=900.0,
                    latency_ms=4000.0,
                ),
                event(
                    slow, south, 2 * 24 * 60, prompt_tokens=1, completion_tokens=1, latency_ms=1.0
                ),
            ]
        )
        run = Conversation(title="race", mode="compare")
        s.add(run)
        s.flush()
        assert run.id
        for lane, card in enumerate([fast, slow]):
            s.add(
                Message(
                    conversation_id=run.id,
                    turn=0,
                    lane=lane,
                    role="assistant",
                    model_id=card.id,
                    model_name=card.display_name,
                )
            )
        s.add(Vote(conversation_id=run.id, turn=0, kind="preference", choice="A"))
        return Cards(fast.id, slow.id)


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, bytes]]:
    """What each download button would serve, by media file id (AppTest keeps no files)."""
    served: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self: MemoryMediaFileStorage, data: str | bytes, *args: object, **kw: object) -> str:
        file_id = original(self, data, *args, **kw)  # type: ignore[arg-type]
        served[file_id] = data.encode() if isinstance(data, str) else data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    yield served


def table(app: App) -> list[dict[str, object]]:
    frame = app.at.dataframe[0].value  # the figures table (the per-bucket one comes second)
    return [{k: v for k, v in row.items() if v == v} for row in frame.to_dict("records")]


def test_empty_state_points_to_the_sandbox(app: App) -> None:
    app.go("usage")
    assert app.texts("title") == ["Usage"]
    assert "No usage yet" in app.everything()
    assert [getattr(link, "label", None) for link in app.at.get("page_link")] == [
        "Open the Sandbox"
    ]
    assert not app.at.dataframe


def test_figures_per_model_over_the_last_24_hours(app: App, cards: Cards) -> None:
    app.go("usage")
    shown = app.everything()
    assert "All times are UTC." in shown and "24 buckets of 1 h." in shown
    metrics = {m.label: m.value for m in app.at.metric}
    assert metrics == {
        "Requests": "5",
        "Errors": "1",
        "Prompt tokens": "37",
        "Completion tokens": "100",
    }
    rows = table(app)
    assert rows == [
        {
            "Model": "Fast",
            "Requests": 4,
            "Errors": 1,
            "Errors by kind": "http_429 × 1",
            "Stopped": 0,
            "Prompt tokens": 30,
            "Completion tokens": 60,
            "TTFT median (ms)": 20.0,
            "TTFT p95 (ms)": 30.0,
            "Latency median (ms)": 200.0,
            "Latency p95 (ms)": 300.0,
            "Tokens/s": 100.0,
            "Win rate": 1.0,
            "Wins": 1,
            "Comparisons": 1,
        },
        {
            "Model": "Slow",
            "Requests": 1,
            "Errors": 0,
            "Errors by kind": "",
            "Stopped": 0,
            "Prompt tokens": 7,
            "Completion tokens": 40,
            "TTFT median (ms)": 900.0,
            "TTFT p95 (ms)": 900.0,
            "Latency median (ms)": 4000.0,
            "Latency p95 (ms)": 4000.0,
            "Tokens/s": 10.0,
            "Win rate": 0.0,
            "Wins": 0,
            "Comparisons": 1,
        },
    ]
    assert "Win rate: compare votes cast in this window." in shown
    buckets = app.at.dataframe[1].value
    assert len(buckets) == 2 * 24 and buckets["Requests"].sum() == 5


def test_longer_window_fewer_buckets_and_a_model_filter(app: App, cards: Cards) -> None:
    app.go("usage")
    app.at.selectbox(key="usage.window").set_value("Last 7 days")
    app.run()
    assert "28 buckets of 6 h." in app.everything()
    app.at.number_input(key="usage.buckets.Last 7 days").set_value(7)
    app.run()
    assert "7 buckets of 1 day." in app.everything()
    assert [(r["Model"], r["Requests"]) for r in table(app)] == [("Fast", 4), ("Slow", 2)]
    app.at.multiselect(key="usage.models").set_value([cards.slow])
    app.run()
    assert [(r["Model"], r["Requests"]) for r in table(app)] == [("Slow", 2)]


def test_grouping_per_provider(app: App, cards: Cards) -> None:
    app.go("usage")
    app.at.segmented_control(key="usage.group").set_value("provider")
    app.run()
    rows = table(app)
    assert [(r["Provider"], r["Requests"], r["Latency median (ms)"]) for r in rows] == [
        ("North", 4, 200.0),
        ("South", 1, 4000.0),
    ]
    assert "Win rate" not in rows[0]  # win rates are per model
    assert "Latency per provider" in app.texts("subheader")


def test_custom_dates_without_requests(app: App, cards: Cards) -> None:
    app.go("usage")
    app.at.selectbox(key="usage.window").set_value("Custom dates")
    app.run()
    today = datetime.now(UTC).date()
    app.at.date_input(key="usage.dates").set_value(
        (today - timedelta(days=20), today - timedelta(days=10))
    )
    app.run()
    shown = app.everything()
    assert "No request in this window." in shown
    start = today - timedelta(days=20)
    assert f"{start:%Y-%m-%d} 00:00 → " in shown
    assert not app.at.dataframe


def test_csv_download_has_every_figure(app: App, cards: Cards, downloads: dict[str, bytes]) -> None:
    app.go("usage")
    button = app.at.download_button(key="usage.csv")
    assert button.label == "Download CSV"
    file_id = button.proto.url.rsplit("/", 1)[-1].split(".")[0]
    rows = list(csv.DictReader(io.StringIO(downloads[file_id].decode())))
    totals = {r["model"]: r for r in rows if r["scope"] == "total"}
    assert set(totals) == {"Fast", "Slow"}
    assert len(rows) == 2 * 24 + 2
    fast = totals["Fast"]
    assert (
        fast["requests"],
        fast["errors:http_429"],
        fast["latency_median_ms"],
        fast["latency_p95_ms"],
        fast["tokens_per_second"],
        fast["win_rate"],
    ) == ("4", "1", "200.000", "300.000", "100.000", "1.0000")
    assert fast["period_start_utc"].endswith("Z") and fast["period_end_utc"].endswith(":00Z")


def test_a_rerun_reuses_the_report_until_the_data_changes(
    app: App, ws: Workspace, cards: Cards, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report is made once per state of the data (and window: a rolling window moves on
    at each new minute); a new request or a renamed card shows at the next rerun."""
    from core import catalog, usage

    state = ["first"]
    made: list[tuple[object, ...]] = []
    real = usage.usage_report

    def counted(*args: Any, **kw: Any) -> usage.UsageReport:
        made.append((state[0], kw["start"], kw["end"]))
        return real(*args, **kw)

    monkeypatch.setattr(usage, "usage_report", counted)
    app.go("usage")
    app.run()
    app.run()
    assert len(made) == len(set(made)) and {m[0] for m in made} == {"first"}

    state[0] = "new request"
    with ws.session() as s:
        s.add(
            UsageEvent(
                model_id=cards.fast,
                model_name="Fast",
                kind="openai_compat",
                completion_tokens=5,
                latency_ms=50.0,
            )
        )
    app.run()
    assert made[-1][0] == "new request" and [r["Requests"] for r in table(app)] == [5, 1]

    state[0] = "renamed"
    draft = catalog.model_draft(catalog.get_card(ws, cards.fast))
    catalog.update_model(ws, cards.fast, replace(draft, display_name="Quick"))
    app.run()
    assert made[-1][0] == "renamed" and [r["Model"] for r in table(app)] == ["Quick", "Slow"]
    assert len(made) == len(set(made))  # never the same report twice
