"""Page cost: a Streamlit rerun of a full page against the same page nearly empty, with
AppTest, in the same run. Goal: under 2× (CPU time of a rerun) for the Sandbox with a
200-message chat and for the Models page with 500 cards.

    python -m bench.page_cost
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

import ui.deps
from bench.results import median, record
from core import catalog, history
from core.catalog import ModelDraft, ProviderDraft
from core.settings import load_settings
from core.tables import Message
from core.workspace import Workspace
from ui import sandbox_state
from ui.cards import PAGE_SIZE
from ui.chat_view import WINDOW

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = 200
CARDS = 500
REPEAT = 15  # reruns of each page state, interleaved
GOAL = 2.0
REPLY = (
    "Here is a reply of a realistic length, with **some markdown**, a list and a bit of code:\n\n"
    "- first point, explained in a sentence or two so the line wraps in the browser;\n"
    "- second point, with `inline code` and a [link](https://example.com);\n\n"
    "```python\nprint('hello')\n```\n\nThat should cover it."
)


def add_chat(ws: Workspace, card_id: int, name: str, turns: int) -> int:
    conversation = history.create_conversation(ws, title=name).id
    with ws.session() as session:
        for turn in range(turns):
            common: dict[str, Any] = {
                "conversation_id": conversation,
                "turn": turn,
                "model_id": card_id,
            }
            session.add(Message(role="user", content=f"Question {turn}: tell me more?", **common))
            session.add(
                Message(
                    role="assistant",
                    content=f"{turn}. {REPLY}",
                    model_name="bench model",
                    finish_reason="stop",
                    ttft_ms=120.0 + turn,
                    latency_ms=1500.0 + turn,
                    prompt_tokens=50 + turn,
                    completion_tokens=80,
                    **common,
                )
            )
    return conversation


def add_cards(ws: Workspace, count: int) -> None:
    """`count` cards as the Add custom model form makes them: each its own keyed connection."""
    for i in range(count):
        catalog.add_custom_model(
            ws,
            ProviderDraft(
                name=f"endpoint {i:03d}",
                kind="openai_compat",
                base_url=f"http://127.0.0.1:{9000 + i % 50}/v1",
                auth_type="bearer",
                api_key=f"sk-bench-{i:04d}-abcdefghijklmnop",
            ),
            ModelDraft(
                display_name=f"Model {i:03d}",
                remote_model=f"org/model-{i:03d}",
                description=f"Bench card number {i}, a fine-tuned model for tests.",
                tags=["bench", f"group-{i % 10}"],
            ),
        )


def open_home(prefix: str) -> Workspace:
    home = Path(tempfile.mkdtemp(prefix=prefix))
    return Workspace.open(load_settings({"PLUGBOARD_HOME": str(home)}))


def main() -> int:
    os.environ.pop("DATABASE_URL", None)
    # Two databases, opened once: the pages get one or the other from ui.deps.workspace()
    # (the app's cached Workspace), so a rerun measures the page, never a database opening.
    full = open_home("bench-page-full-")
    empty = open_home("bench-page-empty-")
    current: list[Workspace] = [empty]
    real_workspace = ui.deps.workspace
    ui.deps.workspace = lambda: current[0]  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        add_cards(full, CARDS - 1)  # and the seeded local model's card
        gemma = catalog.list_cards(empty)[0].id  # the seeded local model
        long_chat = add_chat(empty, gemma, "long chat", MESSAGES // 2)
        short_chat = add_chat(empty, gemma, "short chat", 1)
        setup = time.perf_counter() - started

        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()

        def page(ws: Workspace, name: str, conversation: int | None = None) -> Callable[[], None]:
            def rerun() -> None:
                current[0] = ws
                if conversation is not None:
                    at.session_state[sandbox_state.CONVERSATION] = conversation
                at.switch_page(f"pages/{name}.py")
                at.run()
                assert not at.exception, [e.value for e in at.exception]

            return rerun

        states: dict[str, Callable[[], None]] = {
            "sandbox, 2 messages": page(empty, "sandbox", short_chat),
            f"sandbox, {MESSAGES} messages": page(empty, "sandbox", long_chat),
            "models, 1 card": page(empty, "models"),
            f"models, {CARDS} cards": page(full, "models"),
        }
        times: dict[str, list[float]] = {name: [] for name in states}
        cpu: dict[str, list[float]] = {name: [] for name in states}
        for fn in states.values():  # warm up each state twice: imports, caches, first draw
            fn(), fn()
        for _ in range(REPEAT):
            for name, fn in states.items():
                fn()  # arrive on the state (a page switch is a rerun of its own)…
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()  # …then time a plain rerun of it
                cpu[name].append(time.process_time() - start_cpu)
                times[name].append(time.perf_counter() - start)
        check_full_pages(at, states)
    finally:
        ui.deps.workspace = real_workspace
        full.close()
        empty.close()
    names = list(states)
    cpu_ms = {name: median(values) * 1000 for name, values in cpu.items()}
    wall_ms = {name: median(values) * 1000 for name, values in times.items()}
    pairs = {"Sandbox": (names[0], names[1]), "Models": (names[2], names[3])}
    ratio = {page: cpu_ms[full] / cpu_ms[small] for page, (small, full) in pairs.items()}
    wall = {page: wall_ms[full] / wall_ms[small] for page, (small, full) in pairs.items()}
    ok = all(r < GOAL for r in ratio.values())

    def row(name: str) -> str:
        runs = ", ".join(f"{t * 1000:.0f}" for t in cpu[name])
        return f"| {name} | {cpu_ms[name]:.1f} ms | {wall_ms[name]:.1f} ms | {runs} |"

    def verdict(page: str) -> str:
        meets = "meets it" if ratio[page] < GOAL else "MISSES it"
        return f"**{page}: {ratio[page]:.2f}×** ({meets}; wall clock {wall[page]:.2f}×)"

    record(
        "Page cost: Sandbox with a long chat, Models with many cards",
        f"""
`streamlit.testing.v1.AppTest` on the real app.py: the cost of one rerun of a page (after
arriving on it), median of {REPEAT} interleaved reruns of each state after two warm-ups. The
cost is the process's CPU time during the rerun (the page script's thread and AppTest's
reading of what it drew), which other work on a shared machine hardly moves; wall-clock
medians are shown beside it. Sandbox: a {MESSAGES}-message chat ({MESSAGES // 2} prompts and
their replies, each reply with markdown and figures) against the same page with a 2-message
chat, same database; the chat view draws the newest {WINDOW} messages and a "Show earlier
messages" button. Models: {CARDS} cards, each on its own connection with a stored API key
(as the Add custom model form makes them), against a database holding only the bundled
model's card; the grid draws {PAGE_SIZE} cards a page. Both databases are opened once
(setup {setup:.0f} s), so a rerun measures the page, not the database opening.

| page state | median CPU | median wall | runs (CPU ms) |
|---|---|---|---|
{row(names[0])}
{row(names[1])}
{row(names[2])}
{row(names[3])}

{verdict("Sandbox")}, {verdict("Models")}; goal under {GOAL:g}×.
""",
    )
    print(
        "; ".join(f"{name} {cpu_ms[name]:.1f} ms CPU ({wall_ms[name]:.0f} wall)" for name in names)
    )
    print(
        f"sandbox {ratio['Sandbox']:.2f}× (wall {wall['Sandbox']:.2f}×), "
        f"models {ratio['Models']:.2f}× (wall {wall['Models']:.2f}×)"
    )
    return 0 if ok else 1


def check_full_pages(at: AppTest, states: dict[str, Callable[[], None]]) -> None:
    """The full states really draw what they should."""
    names = list(states)
    states[names[1]]()
    drawn = len(at.chat_message)
    assert drawn == min(MESSAGES, WINDOW), drawn
    if drawn < MESSAGES:
        assert f"Show earlier messages ({MESSAGES - drawn} more)" in [b.label for b in at.button]
    states[names[3]]()
    assert any(f"{CARDS} of {CARDS} models" in c.value for c in at.caption)
    assert len(at.menu_button) == min(CARDS, PAGE_SIZE), len(at.menu_button)


if __name__ == "__main__":
    sys.exit(main())
