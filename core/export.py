"""Export a chat or a compare run: JSON (everything), Markdown (to read), CSV (the compare
table). Exports carry prompts, replies, settings, figures and votes — never a secret: model
names and parameters only, and every text is scrubbed of known secrets on the way out.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from core import compare, history, votes
from core.history import ConversationView, MessageView
from core.secrets import scrub
from core.workspace import Workspace


def _figures(m: MessageView) -> dict[str, Any]:
    return {
        "ttft_ms": round(m.ttft_ms, 1) if m.ttft_ms is not None else None,
        "latency_ms": round(m.latency_ms, 1) if m.latency_ms is not None else None,
        "prompt_tokens": m.prompt_tokens,
        "completion_tokens": m.completion_tokens,
        "tokens_estimated": m.tokens_estimated,
        "tokens_per_second": round(m.tokens_per_second, 2) if m.tokens_per_second else None,
        "finish_reason": m.finish_reason,
    }


def _reply(m: MessageView, rating: str | None) -> dict[str, Any]:
    return {
        "lane": compare.LETTERS[m.lane] if m.lane < len(compare.LETTERS) else str(m.lane),
        "model": m.model_name,
        "text": scrub(m.content),
        "status": m.status,
        "error": scrub(m.error_message) if m.error_message else None,
        "parameters": m.params,
        "figures": _figures(m),
        "rating": rating,
    }


def conversation_data(ws: Workspace, conversation_id: int) -> dict[str, Any]:
    conversation = history.get_conversation(ws, conversation_id)
    if conversation is None:
        raise LookupError(f"Conversation {conversation_id} does not exist.")
    return build(conversation, votes.votes_for(ws, conversation_id))


def build(conversation: ConversationView, cast: votes.ConversationVotes) -> dict[str, Any]:
    lanes = conversation.params.get("lanes")
    lane_models = {m.lane: m.model_name for m in conversation.messages if m.model_name}
    turns = []
    for turn in compare.turns(conversation):
        replies = [_reply(m, cast.ratings.get(m.id)) for _, m in sorted(turn.replies.items())]
        fastest, longest = turn.fastest(), turn.longest()
        turns.append(
            {
                "turn": turn.turn + 1,
                "prompt": scrub(turn.prompt),
                "replies": replies,
                "preferred": cast.preferences.get(turn.turn),
                "fastest": compare.LETTERS[fastest] if fastest is not None else None,
                "longest": compare.LETTERS[longest] if longest is not None else None,
            }
        )
    return {
        "title": scrub(conversation.title),  # the first prompt, which may hold a pasted key
        "mode": conversation.mode,
        "created_at": conversation.created_at.isoformat(),
        "system_prompt": scrub(conversation.system_prompt),
        "parameters": {k: v for k, v in conversation.params.items() if k != "lanes"},
        "lanes": [
            {
                "lane": compare.LETTERS[i],
                "model": lane_models.get(i, ""),
                "system_prompt": scrub(lane.get("system_prompt", "")),
                "parameters": lane.get("params", {}),
            }
            for i, lane in enumerate(lanes or [])
        ],
        "turns": turns,
    }


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def _figures_line(figures: dict[str, Any]) -> str:
    approx = "≈" if figures["tokens_estimated"] else ""
    parts = []
    if figures["ttft_ms"] is not None:
        parts.append(f"first token {figures['ttft_ms']:.0f} ms")
    if figures["latency_ms"] is not None:
        parts.append(f"total {figures['latency_ms']:.0f} ms")
    tokens_in, tokens_out = figures["prompt_tokens"] or 0, figures["completion_tokens"] or 0
    parts.append(f"{approx}{tokens_in} → {approx}{tokens_out} tokens")
    if figures["tokens_per_second"]:
        parts.append(f"{figures['tokens_per_second']} tok/s")
    if figures["finish_reason"]:
        parts.append(str(figures["finish_reason"]))
    return " · ".join(parts)


def to_markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# {data['title']}",
        "",
        f"*{data['mode']} · {data['created_at'][:16].replace('T', ' ')} UTC*",
        "",
    ]
    if data["lanes"]:
        lines += ["## Lanes", ""]
        for lane in data["lanes"]:
            settings = (
                ", ".join(f"{k} = {v}" for k, v in lane.get("parameters", {}).items()) or "defaults"
            )
            lines.append(f"- **{lane['lane']}**: {lane['model'] or 'no reply yet'}, {settings}")
            if lane.get("system_prompt"):
                lines.append(f"  - system prompt: {lane['system_prompt']}")
        lines.append("")
    elif data["system_prompt"]:
        lines += [f"**System prompt:** {data['system_prompt']}", ""]
    for turn in data["turns"]:
        lines += [f"## Turn {turn['turn']}", "", f"**Prompt:** {turn['prompt']}", ""]
        for reply in turn["replies"]:
            marks = [
                m
                for m, key in (("fastest", "fastest"), ("longest", "longest"))
                if turn[key] == reply["lane"]
            ]
            header = (
                f"### {reply['lane']} · {reply['model']}"
                if data["mode"] == "compare"
                else f"### {reply['model']}"
            )
            lines += [header + (f" ({', '.join(marks)})" if marks else ""), ""]
            lines += [reply["text"] or "*(no text)*", ""]
            if reply["error"]:
                lines += [f"> Error: {reply['error']}", ""]
            rating = {"up": " · 👍", "down": " · 👎"}.get(reply["rating"] or "", "")
            lines += [f"*{_figures_line(reply['figures'])}{rating}*", ""]
        if turn["preferred"]:
            lines += [f"**Preferred:** {turn['preferred'].replace('_', ' ')}", ""]
    return "\n".join(lines)


CSV_COLUMNS = (
    "turn",
    "prompt",
    "lane",
    "model",
    "status",
    "reply",
    "ttft_ms",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "tokens_estimated",
    "tokens_per_second",
    "finish_reason",
    "rating",
    "preferred",
    "fastest",
    "longest",
)


def to_csv(data: dict[str, Any]) -> str:
    """One row per reply: the compare table."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for turn in data["turns"]:
        for reply in turn["replies"]:
            writer.writerow(
                {
                    "turn": turn["turn"],
                    "prompt": turn["prompt"],
                    "lane": reply["lane"],
                    "model": reply["model"],
                    "status": reply["status"],
                    "reply": reply["text"],
                    **reply["figures"],
                    "rating": reply["rating"] or "",
                    "preferred": turn["preferred"] or "",
                    "fastest": turn["fastest"] == reply["lane"],
                    "longest": turn["longest"] == reply["lane"],
                }
            )
    return out.getvalue()
