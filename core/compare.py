"""Compare runs: one prompt sent to 2–6 lanes at the same time, each lane a model with its own
system prompt and settings and its own history.

`stream_lanes()` runs every lane's chat turn on its own thread and hands the events to the
caller as they arrive, so the whole turn takes about as long as the slowest lane.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from core import history
from core.chat import TurnRequest, TurnResult, stream_turn
from core.history import ConversationView, MessageView
from core.inference.http import describe_error
from core.inference.types import TextDelta
from core.workspace import Workspace

MIN_LANES, MAX_LANES = 2, 6
LETTERS = "ABCDEF"


@dataclass(frozen=True)
class LaneSpec:
    model_id: int
    system_prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)


def lanes_of(conversation: ConversationView) -> list[LaneSpec]:
    """The lanes a compare run was saved with."""
    return [LaneSpec(**lane) for lane in conversation.params.get("lanes", [])]


def start_compare(ws: Workspace, lanes: Sequence[LaneSpec], *, title: str, sync: bool) -> int:
    """Create the compare conversation; returns its id."""
    check_lane_count(len(lanes))
    created = history.create_conversation(
        ws, title=title, mode="compare", params={"lanes": [asdict(x) for x in lanes], "sync": sync}
    )
    return created.id


def save_lanes(
    ws: Workspace, conversation_id: int, lanes: Sequence[LaneSpec], *, sync: bool
) -> None:
    """Lanes may change between turns (another model, other settings); keep the latest."""
    check_lane_count(len(lanes))
    history.update_conversation(
        ws, conversation_id, params={"lanes": [asdict(x) for x in lanes], "sync": sync}
    )


def check_lane_count(count: int) -> None:
    if not MIN_LANES <= count <= MAX_LANES:
        raise ValueError(f"A compare run has {MIN_LANES} to {MAX_LANES} lanes, not {count}.")


@dataclass
class _LaneDone:
    result: TurnResult | None


def stream_lanes(
    ws: Workspace, conversation_id: int, prompt: str, lanes: Sequence[LaneSpec]
) -> Generator[tuple[int, TextDelta | TurnResult], None, None]:
    """Yield `(lane, event)` from every lane as events arrive; each lane ends with a TurnResult.

    Closing the generator (Stop, a page rerun) tells every lane to stop: each saves what it
    has as a stopped reply, like a single chat does.
    """
    check_lane_count(len(lanes))
    turn = history.next_turn(ws, conversation_id)
    events: queue.Queue[tuple[int, TextDelta | TurnResult | _LaneDone]] = queue.Queue()
    stop = threading.Event()

    def run(index: int, lane: LaneSpec) -> None:
        request = TurnRequest(
            model_id=lane.model_id,
            prompt=prompt,
            conversation_id=conversation_id,
            system_prompt=lane.system_prompt,
            params=lane.params,
            lane=index,
            turn=turn,
        )
        turn_events = stream_turn(ws, request)
        result: TurnResult | None = None
        try:
            for event in turn_events:
                if isinstance(event, TurnResult):
                    result = event
                else:
                    events.put((index, event))
                if stop.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 — e.g. the card was deleted meanwhile
            result = TurnResult(conversation_id, "", "error", describe_error(exc))
        finally:
            turn_events.close()  # a stop mid-reply is saved as "stopped" by stream_turn
            events.put((index, _LaneDone(result)))

    threads = [
        threading.Thread(target=run, args=(i, lane), name=f"compare-lane-{i}", daemon=True)
        for i, lane in enumerate(lanes)
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            index, event = events.get()
            if isinstance(event, _LaneDone):
                running -= 1
                if event.result is not None:
                    yield index, event.result
            else:
                yield index, event
    finally:
        stop.set()


@dataclass(frozen=True)
class CompareTurn:
    """One prompt of a compare run and each lane's reply to it."""

    turn: int
    prompt: str
    replies: dict[int, MessageView]  # lane -> assistant message

    def fastest(self) -> int | None:
        """The lane whose good reply finished first (None without a clear winner)."""
        return self._best(lambda m: -(m.latency_ms or 0.0), lambda m: bool(m.latency_ms))

    def longest(self) -> int | None:
        """The lane with the most generated tokens (None on a tie)."""
        return self._best(
            lambda m: float(m.completion_tokens or 0), lambda m: bool(m.completion_tokens)
        )

    def _best(
        self, score: Callable[[MessageView], float], usable: Callable[[MessageView], bool]
    ) -> int | None:
        scored = {
            lane: score(m) for lane, m in self.replies.items() if m.status == "ok" and usable(m)
        }
        if len(scored) < 2:
            return None
        top = max(scored.values())
        winners = [lane for lane, value in scored.items() if value == top]
        return winners[0] if len(winners) == 1 else None


def turns(conversation: ConversationView) -> list[CompareTurn]:
    """Group a compare run's messages by turn: the prompt and every lane's reply."""
    prompts: dict[int, str] = {}
    replies: dict[int, dict[int, MessageView]] = {}
    for m in conversation.messages:
        if m.role == "user":
            prompts.setdefault(m.turn, m.content)
        elif m.role == "assistant":
            replies.setdefault(m.turn, {})[m.lane] = m
    return [CompareTurn(t, prompts[t], replies.get(t, {})) for t in sorted(prompts)]
