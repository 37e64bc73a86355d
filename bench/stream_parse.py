"""Stream parsing: our OpenAI-compatible adapter reading a 20,000-chunk stream, against a raw
httpx loop (the practical limit) and the official `openai` SDK, in the same run.
Goal: ours at most 1.5× the raw baseline.

    python -m bench.stream_parse

The server is a separate process on 127.0.0.1 that answers every POST with one pre-rendered
SSE body (20,000 chat.completion.chunk events, a finish chunk, a usage chunk and [DONE]), so
it is not the bottleneck: what is measured is the client reading and decoding the stream.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.results import median, record
from core.inference.openai_compat import OpenAICompatAdapter
from core.inference.target import Target
from core.inference.types import GenerationParams, Message, TextDelta

CHUNKS = 20_000
REPEAT = 7  # runs of each client, interleaved
SDK_REPEAT = 3  # the SDK is ~25× slower: fewer runs keep the benchmark short
GOAL = 1.5
MODEL = "bench-model"
PROMPT = "Count."
MESSAGES = [{"role": "user", "content": PROMPT}]


def sse_body(chunks: int = CHUNKS) -> bytes:
    """What an OpenAI-compatible server streams for a reply of `chunks` words."""

    def event(payload: object) -> bytes:
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def chunk(delta: dict[str, str], finish: str | None) -> dict[str, object]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1694268190,
            "model": MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None,
        }

    parts = [event(chunk({"role": "assistant", "content": ""}, None))]
    parts += [event(chunk({"content": f" w{i}"}, None)) for i in range(chunks - 1)]
    parts.append(event(chunk({}, "stop")))
    usage = {"prompt_tokens": 9, "completion_tokens": chunks, "total_tokens": chunks + 9}
    parts.append(event({**chunk({}, None), "choices": [], "usage": usage}))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def expected_text(chunks: int = CHUNKS) -> str:
    return "".join(f" w{i}" for i in range(chunks - 1))


# --- the server (its own process) ----------------------------------------------------------------


def _serve_connection(conn: socket.socket, head: bytes, body: bytes, delay: float) -> None:
    buffer = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            request, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in request.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            buffer = buffer[length:]
            if delay:  # the response head at once, the first chunk after `delay`
                conn.sendall(head)
                time.sleep(delay)
                conn.sendall(body)
            else:
                conn.sendall(head + body)


def serve(chunks: int = CHUNKS, delay: float = 0.0) -> None:
    """Answer every request on a keep-alive connection with the same SSE response."""
    body = sse_body(chunks)
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"cache-control: no-cache\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(listener.getsockname()[1], flush=True)
    listener.settimeout(600)  # a forgotten server ends by itself
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(
            target=_serve_connection, args=(conn, head, body, delay), daemon=True
        ).start()


def start_server(chunks: int = CHUNKS, delay: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    """The server in its own process (no GIL shared with the clients); its base URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from bench.stream_parse import serve; serve({chunks!r}, {delay!r})",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1"


# --- the three clients -------------------------------------------------------------------------


def raw_client(client: httpx.Client, url: str) -> Callable[[], str]:
    """httpx streaming + iter_lines + json.loads of each data line: the practical limit."""
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}

    def run() -> str:
        parts: list[str] = []
        with client.stream("POST", f"{url}/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    continue  # read to the end: the connection goes back to the pool
                chunk = json.loads(data)
                for choice in chunk["choices"]:
                    if text := choice["delta"].get("content"):
                        parts.append(text)
        return "".join(parts)

    return run


def our_client(client: httpx.Client, url: str) -> Callable[[], str]:
    """core.inference.openai_compat: what the Sandbox and the CLI use."""
    adapter = OpenAICompatAdapter(
        Target(kind="openai_compat", base_url=url, model=MODEL, max_retries=0), client
    )
    messages = [Message("user", PROMPT)]

    def run() -> str:
        parts = [
            event.text
            for event in adapter.stream_chat(messages, GenerationParams())
            if isinstance(event, TextDelta)
        ]
        return "".join(parts)

    return run


def sdk_client(url: str) -> Callable[[], str]:
    """The official openai SDK (httpx2, pydantic models for every chunk)."""
    import openai

    sdk = openai.OpenAI(base_url=url, api_key="bench", max_retries=0)

    def run() -> str:
        parts: list[str] = []
        stream: Any = sdk.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    parts.append(choice.delta.content)
        return "".join(parts)

    return run


def timed_text(fn: Callable[[], str], want: str) -> float:
    start = time.perf_counter()
    text = fn()
    elapsed = time.perf_counter() - start
    assert text == want, f"wrong text: {text[:80]!r}…"
    return elapsed


def main() -> int:
    import openai

    proc, url = start_server()
    want = expected_text()
    client = httpx.Client()
    try:
        raw, ours, sdk = raw_client(client, url), our_client(client, url), sdk_client(url)
        for fn in (raw, ours, sdk):  # warm up connections and imports
            timed_text(fn, want)
        times: dict[str, list[float]] = {"raw": [], "ours": [], "sdk": []}
        for i in range(REPEAT):
            times["raw"].append(timed_text(raw, want))
            times["ours"].append(timed_text(ours, want))
            if i < SDK_REPEAT:
                times["sdk"].append(timed_text(sdk, want))
    finally:
        client.close()
        proc.kill()
        proc.wait()
    med = {k: median(v) for k, v in times.items()}
    per_chunk = {k: v / CHUNKS * 1e6 for k, v in med.items()}
    ratio = med["ours"] / med["raw"]
    sdk_ratio = med["sdk"] / med["ours"]
    verdict = "meets" if ratio <= GOAL else "MISSES"

    def row(name: str, key: str) -> str:
        runs = ", ".join(f"{t * 1000:.0f}" for t in times[key])
        return f"| {name} | {med[key] * 1000:.0f} ms | {per_chunk[key]:.1f} µs | {runs} |"

    record(
        "Stream parsing: our adapter vs raw httpx and the openai SDK",
        f"""
A local server process on 127.0.0.1 answers with one pre-rendered SSE body of {CHUNKS:,}
`chat.completion.chunk` events (about {len(sse_body()) / 1e6:.1f} MB, keep-alive), so only
the client's reading and decoding is measured. Each client reads the whole stream and joins
the text (checked). Baseline (raw): `httpx` `client.stream()` + `iter_lines()` + `json.loads`
of each `data:` line, the practical limit. Ours: `OpenAICompatAdapter.stream_chat()` on the
same pooled httpx client. SDK: `openai` {openai.__version__}
`chat.completions.create(stream=True)`. Interleaved runs, medians ({REPEAT} runs each,
{SDK_REPEAT} of the SDK).

| client | median | per chunk | runs (ms) |
|---|---|---|---|
{row("raw httpx (baseline)", "raw")}
{row("ours (openai_compat)", "ours")}
{row(f"openai SDK {openai.__version__}", "sdk")}

**Ratio ours / raw: {ratio:.2f}×** (goal at most {GOAL}×: {verdict} it).
The SDK takes {sdk_ratio:.1f}× as long as ours.
""",
    )
    print(
        f"raw {per_chunk['raw']:.1f} µs/chunk, ours {per_chunk['ours']:.1f} µs/chunk, "
        f"sdk {per_chunk['sdk']:.1f} µs/chunk; ours/raw {ratio:.2f}×, sdk/ours {sdk_ratio:.1f}×"
    )
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
