"""Time to first token: what core adds to a bare httpx streaming request, in the same run.
Goal: the adapter path adds under 5 ms (the full turn, with its database writes, is reported).

    python -m bench.ttft_overhead

A local server process on 127.0.0.1 sends the response head at once and its SSE body (a
short OpenAI chat.completion stream) after a fixed delay. Three clients, interleaved:
  bare     httpx `client.stream()` + `iter_lines()` to the first `data:` line with text
  adapter  `OpenAICompatAdapter.stream_chat()` to its first TextDelta
  turn     `core.chat.stream_turn()` to its first TextDelta: the card read, the prompt saved
           (SQLite, WAL), history fitted, the target built, then the adapter
Each reads its stream to the end after timing, so every run reuses a kept-alive connection.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.results import median, record
from bench.stream_parse import MODEL, start_server
from core import catalog, history
from core.catalog import ModelDraft, ProviderDraft
from core.chat import TurnRequest, stream_turn
from core.inference.http import make_client
from core.inference.registry import make_adapter
from core.inference.types import GenerationParams, Message, TextDelta
from core.settings import load_settings
from core.workspace import Workspace

DELAY = 0.050  # seconds before the server sends its first chunk
CHUNKS = 8
REPEAT = 30
GOAL_MS = 5.0
PROMPT = "Say something."


def main() -> int:
    proc, url = start_server(CHUNKS, DELAY)
    home = Path(tempfile.mkdtemp(prefix="bench-ttft-"))
    ws = Workspace.open(load_settings({"PLUGBOARD_HOME": str(home)}), seed_defaults=False)
    try:
        card = catalog.add_custom_model(
            ws,
            ProviderDraft(name="bench", kind="openai_compat", base_url=url, auth_type="none"),
            ModelDraft(display_name="bench", remote_model=MODEL),
        )
        # Each path has its own pooled client (as configured by core), so no path inherits a
        # pool another path left behind: the full turn uses the workspace's.
        bare_client, adapter_client = make_client(), make_client()
        adapter = make_adapter(catalog.target_for(ws, card.id), adapter_client)
        body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True}

        def bare() -> float:
            start = time.perf_counter()
            first = 0.0
            with bare_client.stream("POST", f"{url}/chat/completions", json=body) as response:
                for line in response.iter_lines():
                    if first or not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    if json.loads(line[5:])["choices"][0]["delta"].get("content"):
                        first = time.perf_counter()
            return first - start

        def through_adapter() -> float:
            start = time.perf_counter()
            first = 0.0
            for event in adapter.stream_chat([Message("user", PROMPT)], GenerationParams()):
                if not first and isinstance(event, TextDelta):
                    first = time.perf_counter()
            return first - start

        def full_turn() -> float:
            # As the Sandbox does: the chat exists before its first turn.
            conversation = history.create_conversation(ws, title=PROMPT).id
            start = time.perf_counter()
            first = 0.0
            for event in stream_turn(ws, TurnRequest(card.id, PROMPT, conversation)):
                if not first and isinstance(event, TextDelta):
                    first = time.perf_counter()
                elif not isinstance(event, TextDelta):
                    assert event.status == "ok", event.error
            return first - start

        runs: dict[str, Callable[[], float]] = {
            "bare": bare,
            "adapter": through_adapter,
            "turn": full_turn,
        }
        for fn in runs.values():  # warm up connections, imports and the database
            fn()
        times: dict[str, list[float]] = {name: [] for name in runs}
        order = list(runs)
        for i in range(REPEAT):  # each path goes first, second and third in turn
            for name in order[i % 3 :] + order[: i % 3]:
                times[name].append(runs[name]())
        bare_client.close()
        adapter_client.close()
    finally:
        ws.close()
        proc.kill()
        proc.wait()
    ms = {name: median(values) * 1000 for name, values in times.items()}
    added = {name: ms[name] - ms["bare"] for name in ("adapter", "turn")}
    verdict = "meets" if added["adapter"] < GOAL_MS else "MISSES"

    def row(label: str, name: str) -> str:
        extra = f"{added[name]:+.2f} ms" if name in added else "—"
        ratio = ms[name] / ms["bare"]
        spread = f"{min(times[name]) * 1000:.1f}–{max(times[name]) * 1000:.1f}"
        return f"| {label} | {ms[name]:.2f} ms | {extra} | {ratio:.3f}× | {spread} |"

    record(
        "Time to first token: core vs a bare httpx request",
        f"""
A local server process on 127.0.0.1 sends the response head at once and a short
OpenAI-compatible SSE stream ({CHUNKS} chunks) {DELAY * 1000:.0f} ms later. Time from the
request to the first text: median of {REPEAT} interleaved runs (the order rotating), each
path on its own pooled httpx client (`core.inference.http.make_client()`). Baseline (bare):
`httpx` `client.stream()` + `iter_lines()` to the first `data:` line with content.
Adapter: `OpenAICompatAdapter.stream_chat()` to its first `TextDelta`. Full turn:
`core.chat.stream_turn()` in a chat made just before, as the Sandbox makes it (the card
read; the chat's settings, history read and prompt saved in one SQLite transaction
(`history.begin_turn`); history fitted to the context; the key decrypted; then the adapter).

| path | median TTFT | added | ratio | range (ms) |
|---|---|---|---|---|
{row("bare httpx (baseline)", "bare")}
{row("adapter (openai_compat)", "adapter")}
{row("full turn (stream_turn, DB writes)", "turn")}

**Adapter adds {added["adapter"]:.2f} ms** (goal under {GOAL_MS:g} ms: {verdict} it).
The full turn adds {added["turn"]:.2f} ms, so the database work before the request costs
about {added["turn"] - added["adapter"]:.2f} ms (full turn goal, the same 5 ms:
{"meets" if added["turn"] < GOAL_MS else "misses"} it).
""",
    )
    print(
        f"bare {ms['bare']:.2f} ms, adapter {ms['adapter']:.2f} ms ({added['adapter']:+.2f}), "
        f"turn {ms['turn']:.2f} ms ({added['turn']:+.2f})"
    )
    return 0 if added["adapter"] < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
