"""What an adapter needs to reach one model: built from a Provider row and a ModelCard row.

Adapters take a `Target`, never database rows, so they can be used and tested without a DB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from core.egress import EgressPolicy
from core.settings import Timeouts

AuthType = Literal["none", "bearer", "api_key"]
AUTH_TYPES: tuple[AuthType, ...] = ("none", "bearer", "api_key")


@dataclass(frozen=True)
class Auth:
    type: AuthType = "none"
    secret: str | None = field(default=None, repr=False)  # plaintext, in memory only
    header: str = "Authorization"
    prefix: str = ""

    def headers(self) -> dict[str, str]:
        if self.type == "none" or not self.secret:
            return {}
        if self.type == "bearer":
            return {"Authorization": f"Bearer {self.secret}"}
        value = f"{self.prefix} {self.secret}" if self.prefix.strip() else self.secret
        return {self.header.strip() or "Authorization": value}


@dataclass(frozen=True)
class Target:
    kind: str
    base_url: str = ""
    model: str = ""  # the remote model name sent to the server
    name: str = ""  # the card's display name, for messages
    auth: Auth = field(default_factory=Auth)
    headers: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    context_length: int | None = None
    max_retries: int = 2
    max_retry_wait: float = 30.0
    egress: EgressPolicy | None = None  # hosts this server may not (or only may) reach

    def request_headers(self) -> dict[str, str]:
        return {**self.headers, **self.auth.headers()}

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.auth.secret,) if self.auth.secret else ()
