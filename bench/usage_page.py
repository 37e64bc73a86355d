"""Usage page: 100,000 usage events (spread over 30 days, 8 models on 3 providers, 500 voted
compare turns) against the same page on an empty database, in the same run, as a ratio.

    python -m bench.usage_page

Times the page through AppTest (app.py + pages/usage.py, the whole script run, charts and
tables built), and `core.usage.usage_report` alone.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import streamlit as st
from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from bench.results import median, record
from core import usage
from core.compare import LETTERS
from core.settings import DATABASE_FILE, load_settings
from core.tables import Conversation, Message, ModelCard, Provider, UsageEvent, Vote
from core.workspace import Workspace
from ui.usage_view import LAST_DAY, LAST_MONTH, _cached_report

APP = str(Path(__file__).resolve().parent.parent / "app.py")
EVENTS = 100_000
DAYS = 30
VOTES = 500
SMALL = 10
REPEAT = 7
ERROR_KINDS = ("http_429", "http_500", "timeout", "connection", "auth")


def _home(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"bench-usage-{name}-"))


def _open(home: Path) -> Workspace:
    return Workspace.open(load_settings({"PLUGBOARD_HOME": str(home)}), seed_defaults=False)


def seed(ws: Workspace, events: int, now: datetime, votes: int = VOTES) -> None:
    """`events` usage events over the last DAYS days, and `votes` voted compare turns."""
    rng = random.Random(7)
    with ws.session() as s:
        providers = [Provider(name=f"Provider {n}", kind="openai_compat") for n in "ABC"]
        s.add_all(providers)
        s.flush()
        cards = [
            ModelCard(provider_id=providers[i % 3].id or 0, display_name=f"model-{i}")
            for i in range(8)
        ]
        s.add_all(cards)
        s.flush()
        pairs = [(c.id, c.display_name, providers[i % 3]) for i, c in enumerate(cards)]
    rows: list[dict[str, Any]] = []
    for _ in range(events):
        model_id, name, provider = rng.choice(pairs)
        roll = rng.random()
        status = "error" if roll < 0.03 else "stopped" if roll < 0.05 else "ok"
        ttft = rng.lognormvariate(5.5, 0.6)  # ~250 ms
        completion = rng.randint(1, 800) if status != "error" else None
        rows.append(
            {
                "created_at": now - timedelta(seconds=rng.uniform(0, DAYS * 86400)),
                "model_id": model_id,
                "model_name": name,
                "provider_id": provider.id,
                "provider_name": provider.name,
                "kind": "openai_compat",
                "status": status,
                "error_kind": rng.choice(ERROR_KINDS) if status == "error" else None,
                "prompt_tokens": rng.randint(5, 2000),
                "completion_tokens": completion,
                "tokens_estimated": False,
                "ttft_ms": ttft if status != "error" else None,
                "latency_ms": ttft + (completion or 0) * rng.uniform(8, 40),
            }
        )
    # In time order, as a running Plugboard appends them (a shuffled table would make every
    # window read jump around the file, which no real database of usage events does).
    rows.sort(key=lambda row: row["created_at"])
    with ws.engine.begin() as conn:  # one executemany in one transaction
        conn.execute(insert(UsageEvent), rows)
    with ws.session() as s:
        run = Conversation(title="bench", mode="compare")
        s.add(run)
        s.flush()
        for turn in range(votes):
            lanes = rng.sample(pairs, rng.randint(2, 4))
            for lane, (model_id, name, _) in enumerate(lanes):
                s.add(
                    Message(
                        conversation_id=run.id or 0,
                        turn=turn,
                        lane=lane,
                        role="assistant",
                        model_id=model_id,
                        model_name=name,
                    )
                )
            choice = rng.choice([*LETTERS[: len(lanes)], "tie", "all_bad"])
            s.add(
                Vote(
                    conversation_id=run.id or 0,
                    turn=turn,
                    kind="preference",
                    choice=choice,
                    created_at=now - timedelta(seconds=rng.uniform(0, DAYS * 86400)),
                )
            )


class PageRun:
    """The Usage page under AppTest on one database, with `window` chosen."""

    def __init__(self, home: Path, window: str) -> None:
        self.home = home
        self._use()
        self.at = AppTest.from_file(APP, default_timeout=120)
        self.at.run()
        self.at.switch_page("pages/usage.py").run()
        choose = [box for box in self.at.selectbox if box.key == "usage.window"]  # none if empty
        if choose and choose[0].value != window:
            choose[0].set_value(window).run()
        self._check()

    def _use(self) -> None:
        """Point the app at this database: the Workspace is cached once per process."""
        os.environ["PLUGBOARD_HOME"] = str(self.home)
        st.cache_resource.clear()

    def _check(self) -> None:
        assert not self.at.exception, [e.value for e in self.at.exception]

    def measure(self, *, cached: bool) -> Run:
        """One rerun (the run before it, untimed, reopens this database). Not `cached`: the
        report is made anew, as on the first view after any new request; `cached`: it comes
        from the page's cache, as on a rerun that changes nothing (a chart tab, a download)."""
        self._use()
        self.at.run()
        if not cached:
            _cached_report.clear()
        run = Run.of(self.at.run)
        self._check()
        return run


@dataclass(frozen=True)
class Run:
    wall: float  # seconds
    cpu: float  # seconds of this process's CPU (AppTest, Python and SQLite all run in it)

    @classmethod
    def of(cls, fn: Callable[[], object]) -> Run:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return cls(time.perf_counter() - wall, time.process_time() - cpu)


def page_runs(pages: dict[str, PageRun], *, cached: bool) -> dict[str, list[Run]]:
    """REPEAT runs of every page, interleaved, so a busy machine slows them all alike."""
    runs: dict[str, list[Run]] = {name: [] for name in pages}
    for _ in range(REPEAT):
        for name, page in pages.items():
            runs[name].append(page.measure(cached=cached))
    st.cache_resource.clear()
    return runs


def query_runs(ws: Workspace, now: datetime, days: int, buckets: int, group_by: str) -> list[Run]:
    def run() -> None:
        usage.usage_report(
            ws,
            start=now - timedelta(days=days),
            end=now,
            buckets=buckets,
            group_by=group_by,  # type: ignore[arg-type]
        )

    run()
    return [Run.of(run) for _ in range(REPEAT)]


def wall(runs: list[Run]) -> float:
    return median([r.wall for r in runs])


def cpu(runs: list[Run]) -> float:
    return median([r.cpu for r in runs])


def _table(rows: dict[str, list[Run]], base: list[Run] | None = None) -> str:
    lines = [
        "| run | median wall | median CPU | ratio (wall / CPU) | wall runs (s) |",
        "|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        ratio = f"{wall(runs) / wall(base):.0f}× / {cpu(runs) / cpu(base):.0f}×" if base else "—"
        times = ", ".join(f"{r.wall:.3f}" for r in runs)
        lines.append(
            f"| {name} | {wall(runs) * 1000:.0f} ms | {cpu(runs) * 1000:.0f} ms | {ratio} "
            f"| {times} |"
        )
    return "\n".join(lines)


def main() -> int:
    os.environ.pop("DATABASE_URL", None)
    now = datetime.now(UTC)
    homes = {name: _home(name) for name in ("empty", "small", "full")}
    try:
        _open(homes["empty"]).close()
        small = _open(homes["small"])
        seed(small, SMALL, now, votes=5)
        small.close()
        ws = _open(homes["full"])
        started = time.perf_counter()
        seed(ws, EVENTS, now)
        seeded_s = time.perf_counter() - started
        size_mb = (homes["full"] / DATABASE_FILE).stat().st_size / 1e6
        queries = {
            "30 days, 30 buckets, per model (every event)": query_runs(ws, now, 30, 30, "model"),
            "30 days, 30 buckets, per provider": query_runs(ws, now, 30, 30, "provider"),
            "30 days, 200 buckets, per model": query_runs(ws, now, 30, 200, "model"),
            "24 hours, 24 buckets, per model (~3,300 events)": query_runs(ws, now, 1, 24, "model"),
        }
        ws.close()
        states = {
            "empty database (baseline: the empty state)": PageRun(homes["empty"], LAST_DAY),
            f"{SMALL} events, Last 30 days (fixed cost: every chart)": PageRun(
                homes["small"], LAST_MONTH
            ),
            "100k events, Last 24 hours (the default window)": PageRun(homes["full"], LAST_DAY),
            "100k events, Last 30 days (every event)": PageRun(homes["full"], LAST_MONTH),
        }
        pages = page_runs(states, cached=False)
        reruns = page_runs(states, cached=True)
    finally:
        for home in homes.values():
            shutil.rmtree(home, ignore_errors=True)
    base = next(iter(pages.values()))
    every = pages["100k events, Last 30 days (every event)"]
    fixed = pages[f"{SMALL} events, Last 30 days (fixed cost: every chart)"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    record(
        "Usage page: 100,000 usage events vs an empty database",
        f"""
{EVENTS:,} usage events over the last {DAYS} days (8 models on 3 providers, 3 % errors of 5
kinds, 2 % stopped) and {VOTES} voted compare turns, bulk-inserted into a temporary SQLite
database in {seeded_s:.1f} s ({size_mb:.0f} MB), in time order as Plugboard appends them.
Median of {REPEAT} reruns of the Usage page through AppTest (app.py + pages/usage.py:
queries, charts, tables, CSV), the four cases interleaved (each rerun follows an untimed run
that opens its database). **First view**: the report is made anew (the page's cache
cleared), as after any new request. The empty database
shows the page's empty state (the baseline asked for); the {SMALL}-event database draws every
chart and table, so it shows the page's fixed cost. Wall and CPU time of this process: the
machine is shared (load average {load} at the end), so wall times stretch with the load;
CPU times much less.

{_table(pages, base)}

**Ratio, every event in the window vs the empty database: {wall(every) / wall(base):.0f}×
wall, {cpu(every) / cpu(base):.0f}× CPU** ({wall(every) * 1000:.0f} ms against
{wall(base) * 1000:.0f} ms; CPU {cpu(every) * 1000:.0f} ms against {cpu(base) * 1000:.0f} ms).
Against the page drawing the same charts for {SMALL} events: {wall(every) / wall(fixed):.1f}×.

**Rerun** with nothing new (a chart tab, the CSV button, another look): the report comes
from the page's cache, keyed by `usage.data_version` (counts and newest ids of events and
votes, card and connection changes):

{_table(reruns, next(iter(reruns.values())))}

`core.usage.usage_report` alone, same database (one GROUP BY for counts and sums, one query
for each successful request's two timings — the nearest-rank percentiles are taken in Python,
SQLite having no percentile aggregate — and one for the win rates):

{_table(queries)}
""",
    )
    for title, rows in (("page", pages), ("rerun", reruns), ("query", queries)):
        for name, runs in rows.items():
            print(
                f"{title}: {name}: wall {wall(runs) * 1000:.0f} ms, CPU {cpu(runs) * 1000:.0f} ms"
            )
    print(f"ratio wall {wall(every) / wall(base):.1f}x, CPU {cpu(every) / cpu(base):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
