"""Write a benchmark's section of bench/RESULTS.md (replacing its previous run)."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = """# Benchmark results

Each benchmark compares against a baseline measured in the same run and reports the ratio.
Run one with `python -m bench.<name>`; it rewrites its own section below.
"""


def machine() -> str:
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{python}, {os.cpu_count()} cores, {platform.machine()}"


def record(name: str, body: str) -> None:
    """Replace the `## name` section of RESULTS.md with `body` (plus when and where)."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    stamp = f"*{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine()}*"
    section = f"## {name}\n\n{stamp}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(section + "\n", text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    RESULTS.write_text(text.rstrip() + "\n")


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall-clock seconds of `repeat` calls."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)
