"""Logging to PLUGBOARD_HOME/plugboard.log, with every known secret scrubbed from each line."""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

from core.secrets import scrub

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ScrubSecrets(logging.Filter):
    """Rewrites the record's message so no plaintext secret reaches any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if record.exc_info:
            formatted = logging.Formatter().formatException(record.exc_info)
            cleaned = f"{cleaned}\n{scrub(formatted)}"
            record.exc_info = None
            record.exc_text = None
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


_configured: set[Path] = set()


def setup_logging(log_path: Path, level: int = logging.INFO) -> None:
    """Idempotent per file: Streamlit reruns and tests may call it many times."""
    log_path = log_path.resolve()
    if log_path in _configured:
        return
    handler = RotatingFileHandler(log_path, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(ScrubSecrets())
    root = logging.getLogger("plugboard")
    root.setLevel(level)
    root.addHandler(handler)
    # httpx logs every request line at INFO; keep it to warnings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _configured.add(log_path)
