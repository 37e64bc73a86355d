"""Usage figures for a model card: recent requests, tokens, latency, the last error."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlalchemy import select as sa_select  # sqlmodel.select stops at four columns
from sqlmodel import col, select

from core.tables import Message, UsageEvent
from core.workspace import Workspace

RECENT = 500  # the window "recent usage" looks at


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
