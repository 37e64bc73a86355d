"""Compare mode: 4 lanes of a streaming test server (each ~1 s) against the single slowest lane
alone, in the same run. Goal: the 4-lane turn takes under 1.2× the slowest lane.

    python -m bench.compare_lanes
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.results import median, record, timed
from core import catalog, history
from core.catalog import ModelDraft, ProviderDraft
from core.chat import TurnRequest, collect, stream_turn
from core.compare import LaneSpec, stream_lanes
from core.settings import load_settings
from core.workspace import Workspace
from tests.servers.openai_server import OpenAITestServer

LANES = 4
CHUNKS = 20
REPEAT = 5
GOAL = 1.2


def main() -> int:
    servers = [OpenAITestServer(chunk_delay=1.0 / CHUNKS).start() for _ in range(LANES)]
    for server in servers:
        server.reply = " ".join(f"w{i}" for i in range(CHUNKS))  # 21 chunks ≈ 1 s a lane
    home = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    ws = Workspace.open(load_settings({"PLUGBOARD_HOME": str(home)}), seed_defaults=False)
    try:
        cards = [
            catalog.add_custom_model(
                ws,
                ProviderDraft(
                    name=f"server {i}", kind="openai_compat", base_url=s.url, auth_type="none"
                ),
                ModelDraft(display_name=f"lane {i}", remote_model="test-model"),
            )
            for i, s in enumerate(servers)
        ]
        single_id = history.create_conversation(ws, title="single").id
        compare_id = history.create_conversation(ws, title="compare", mode="compare").id

        def one_lane() -> None:
            result = collect(stream_turn(ws, TurnRequest(cards[0].id, "go", single_id)))
            assert result.status == "ok", result.error

        def four_lanes() -> None:
            lanes = [LaneSpec(c.id) for c in cards]
            done = [
                event
                for _, event in stream_lanes(ws, compare_id, "go", lanes)
                if hasattr(event, "status")
            ]
            assert len(done) == LANES and all(r.status == "ok" for r in done)

        one_lane(), four_lanes()  # warm up connections and the database
        single = timed(one_lane, REPEAT)
        compared = timed(four_lanes, REPEAT)
    finally:
        ws.close()
        for server in servers:
            server.stop()
    ratio = median(compared) / median(single)
    verdict = "meets" if ratio < GOAL else "MISSES"
    record(
        "Compare: 4 parallel lanes vs the slowest lane alone",
        f"""
Each lane streams {CHUNKS + 1} chunks from its own OpenAI-compatible test server on 127.0.0.1,
{1000 / CHUNKS:.0f} ms apart (about 1 s a reply). Median of {REPEAT} runs, through
`core.chat.stream_turn` (one lane) and `core.compare.stream_lanes` (four lanes, worker threads),
database writes included.

| run | median | runs (s) |
|---|---|---|
| one lane | {median(single):.3f} s | {", ".join(f"{t:.3f}" for t in single)} |
| four lanes | {median(compared):.3f} s | {", ".join(f"{t:.3f}" for t in compared)} |

**Ratio: {ratio:.3f}×** (goal under {GOAL}×: {verdict} it).
""",
    )
    print(
        f"one lane {median(single):.3f} s, four lanes {median(compared):.3f} s, ratio {ratio:.3f}×"
    )
    return 0 if ratio < GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
