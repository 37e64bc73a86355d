"""Shared pieces of `test_connection()`: name the layer that failed, in plain words."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import httpx

from core.inference.types import (
    AuthFailed,
    BadRequest,
    BadResponse,
    ConfigurationError,
    ConnectionFailed,
    ConnectionReport,
    InferenceError,
    NotFound,
    RequestTimedOut,
)


@dataclass(frozen=True)
class Failure:
    layer: str
    message: str


def resolve(url: str, report: ConnectionReport) -> bool:
    """Check the URL's host resolves (the DNS layer). Adds a step; returns whether it passed."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        report.failed("Endpoint URL", f"The endpoint URL is not valid: {exc}.")
        return False
    host = parsed.host
    if parsed.scheme not in ("http", "https") or not host:
        report.failed(
            "Endpoint URL", "The endpoint URL must start with http:// or https:// and name a host."
        )
        return False
    try:
        socket.getaddrinfo(host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError):
        report.failed("DNS", f"Cannot find the server '{host}'. Check the spelling of the URL.")
        return False
    report.passed("DNS", f"'{host}' was found.")
    return True


def classify(exc: BaseException, *, model: str = "", models: list[str] | None = None) -> Failure:
    """Which layer an exception from a probe request points at."""
    if not isinstance(exc, InferenceError):
        return Failure("Request", f"Unexpected failure: {type(exc).__name__}: {exc}")
    message = exc.message
    if isinstance(exc, ConnectionFailed):
        layer = "TLS" if "(TLS)" in message else "Connection"
        return Failure(layer, message)
    if isinstance(exc, RequestTimedOut):
        return Failure("Connection", message)
    if isinstance(exc, AuthFailed):
        return Failure("Authentication", message)
    if isinstance(exc, ConfigurationError):
        return Failure("Settings", message)
    body = exc.detail.split("\n", 1)[-1].lower()  # what the server said, not our wording
    mentions_model = bool(model) and ("model" in body or model.lower() in body)
    if isinstance(exc, NotFound):
        if models and model and model not in models:
            return Failure(
                "Model name",
                f"The server does not know the model '{model}'. It has: {', '.join(models[:10])}.",
            )
        if mentions_model:
            return Failure("Model name", message)
        return Failure("Path", message)
    if isinstance(exc, BadRequest) and mentions_model:
        return Failure("Model name", message)
    if isinstance(exc, BadResponse):
        return Failure("Response shape", message)
    return Failure("Request", message)
