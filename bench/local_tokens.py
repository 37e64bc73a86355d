"""Local model speed: tokens per second through core.inference.local_gguf against
llama-cpp-python called directly on the same file, prompt and parameters, in the same run.
Goal: at least 0.95× the direct speed.

    python -m bench.local_tokens
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench.results import median, record
from core.inference.local_gguf import BUNDLED, DEFAULT_CONTEXT, LocalGGUFAdapter, model_path
from core.inference.target import Target
from core.inference.types import GenerationParams, Message, TextDelta, Usage

MAX_TOKENS = 128
SEED = 1234
REPEAT = 9  # runs of each path, interleaved
GOAL = 0.95
PROMPT = "Tell me a long story about a lighthouse keeper and a storm, with many details."


def main() -> int:
    from llama_cpp import Llama, __version__

    adapter = LocalGGUFAdapter(Target(kind="local_gguf", base_url=BUNDLED))
    messages = [Message("user", PROMPT)]
    params = GenerationParams(max_tokens=MAX_TOKENS, temperature=0.0, seed=SEED)
    prompt = adapter.prompt(messages)
    options: dict[str, Any] = {
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "seed": SEED,
        "stop": list(adapter.template.stop),  # what the adapter passes, the template's markers
    }
    path = model_path(BUNDLED)
    # Its own Llama on the same file, with the adapter's context size and library defaults.
    llm = Llama(model_path=str(path), n_ctx=DEFAULT_CONTEXT, verbose=False)

    def direct() -> tuple[float, int, str]:
        start = time.perf_counter()
        chunks: Any = llm.create_completion(prompt, stream=True, **options)
        parts = [chunk["choices"][0]["text"] for chunk in chunks]
        elapsed = time.perf_counter() - start
        text = "".join(parts)
        return elapsed, len(llm.tokenize(text.encode(), add_bos=False)), text

    def ours() -> tuple[float, int, str]:
        start = time.perf_counter()
        parts: list[str] = []
        produced = 0
        for event in adapter.stream_chat(messages, params):
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, Usage):
                produced = event.completion_tokens or 0
        return time.perf_counter() - start, produced, "".join(parts)

    # Warm up: both models loaded and the prompt evaluated. The first, cold evaluation of a
    # prompt can pick a different greedy path than the later ones, which reuse its cache.
    for _ in range(2):
        direct(), ours()
    runs: dict[str, list[tuple[float, int, str]]] = {"direct": [], "ours": []}
    for i in range(REPEAT):  # interleaved, each going first in turn
        for name in ("direct", "ours") if i % 2 == 0 else ("ours", "direct"):
            runs[name].append(direct() if name == "direct" else ours())
    tokens = {name: [n for _, n, _ in values] for name, values in runs.items()}
    texts = {text.strip() for values in runs.values() for _, _, text in values}
    same = "the same reply in every run" if len(texts) == 1 else f"{len(texts)} different replies"
    speed = {name: median([n / t for t, n, _ in values]) for name, values in runs.items()}
    ratio = speed["ours"] / speed["direct"]
    # Each round's two runs shared the machine's state: their ratio, as a check on the above.
    rounds = zip(runs["ours"], runs["direct"], strict=True)
    paired = median([(n / t) / (dn / dt) for (t, n, _), (dt, dn, _) in rounds])
    verdict = "meets" if ratio >= GOAL else "MISSES"

    def row(label: str, name: str) -> str:
        values = runs[name]
        per_run = ", ".join(f"{n / t:.1f}" for t, n, _ in values)
        seconds = median([t for t, _, _ in values])
        count = median([float(n) for n in tokens[name]])
        return f"| {label} | {seconds:.3f} s | {count:.0f} | {speed[name]:.1f} tok/s | {per_run} |"

    record(
        "Local model: tokens per second through the adapter vs llama-cpp-python directly",
        f"""
The bundled Gemma 3 270M (`{BUNDLED}`, {path.name}) on llama-cpp-python {__version__}.
Same prompt (the plain dialogue template the adapter renders, {len(prompt)} characters),
temperature 0, seed {SEED}, max_tokens {MAX_TOKENS}, the template's stop markers, streaming.
Baseline (direct): its own `Llama` on the same file (context {DEFAULT_CONTEXT}, library
defaults otherwise) and `create_completion(stream=True)`. Ours:
`LocalGGUFAdapter.stream_chat()` (shared model, lock, prompt tokenised, StopFilter, usage
counted). Speed = completion tokens / wall time of the whole call (prompt included), median
of {REPEAT} interleaved runs each after two warm-ups; {same}.

| path | median time | tokens | median speed | runs (tok/s) |
|---|---|---|---|---|
{row("llama-cpp-python directly (baseline)", "direct")}
{row("ours (local_gguf adapter)", "ours")}

**Ratio: {ratio:.3f}×** the direct speed (goal at least {GOAL}×: {verdict} it); the median
of the {REPEAT} rounds' own ratios is {paired:.3f}×.
""",
    )
    print(
        f"direct {speed['direct']:.1f} tok/s, ours {speed['ours']:.1f} tok/s, "
        f"ratio {ratio:.3f}×, paired {paired:.3f}× ({same})"
    )
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
