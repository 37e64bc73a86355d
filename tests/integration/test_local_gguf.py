"""The local adapter running the real bundled Gemma 3 270M in-process with llama-cpp-python.

Short prompts and few tokens keep these fast; greedy decoding (temperature 0) makes the
text reproducible where a test compares two generations.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from core.inference import local_gguf, prompts
from core.inference.local_gguf import BUNDLED, LocalGGUFAdapter
from core.inference.target import Target
from core.inference.types import (
    BadRequest,
    ConfigurationError,
    Finish,
    GenerationParams,
    Message,
    Reply,
    StreamEvent,
    TextDelta,
    Usage,
)

QUESTION = [Message("user", "What is the capital of Italy?")]
GREEDY = GenerationParams(max_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def adapter(bundled_model: Path) -> LocalGGUFAdapter:
    return LocalGGUFAdapter(Target(kind="local_gguf", base_url=BUNDLED, name="Gemma"))


def texts(events: list[StreamEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


def test_generates_real_text(adapter: LocalGGUFAdapter) -> None:
    events = list(adapter.stream_chat(QUESTION, GREEDY))
    reply = "".join(texts(events))
    assert reply.strip(), "the model produced no text"
    assert any(c.isalpha() for c in reply)
    assert "User:" not in reply  # the plain template's stop ended the turn
    usage = next(e for e in events if isinstance(e, Usage))
    finish = next(e for e in events if isinstance(e, Finish))
    assert events[-2:] == [usage, finish]  # usage and finish come last
    assert usage.prompt_tokens == adapter.count_tokens(adapter.prompt(QUESTION)) + 1  # + BOS
    assert usage.completion_tokens is not None and 0 < usage.completion_tokens <= 12
    assert finish.reason in ("stop", "length")


def test_chat_collects_the_stream(adapter: LocalGGUFAdapter) -> None:
    reply = adapter.chat(QUESTION, GREEDY)
    streamed = "".join(texts(list(adapter.stream_chat(QUESTION, GREEDY))))
    assert isinstance(reply, Reply)
    assert reply.text == streamed  # greedy: the same text both ways
    assert reply.usage is not None and reply.usage.completion_tokens
    assert reply.finish_reason in ("stop", "length")


def test_max_tokens_is_respected(adapter: LocalGGUFAdapter) -> None:
    events = list(adapter.stream_chat(QUESTION, GenerationParams(max_tokens=3, temperature=0)))
    assert 1 <= len(texts(events)) <= 3  # one delta per token at most
    assert Finish("length") in events
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.completion_tokens is not None and usage.completion_tokens <= 3


def test_stop_sequence_ends_the_reply_before_it(adapter: LocalGGUFAdapter) -> None:
    full = adapter.chat(QUESTION, GREEDY).text
    words = full.split()
    assert len(words) >= 3, f"need a few words to pick a stop sequence from: {full!r}"
    stop = words[2]
    cut = adapter.chat(QUESTION, GenerationParams(max_tokens=12, temperature=0, stop=(stop,)))
    assert cut.text == full[: full.index(stop)]
    assert stop not in cut.text
    assert cut.finish_reason == "stop"


def test_same_seed_same_text(adapter: LocalGGUFAdapter) -> None:
    story = [Message("user", "Write a short poem about the sea.")]

    def sample(seed: int) -> str:
        params = GenerationParams(max_tokens=16, temperature=1.3, seed=seed)
        return adapter.chat(story, params).text

    first = sample(1234)
    assert first.strip()
    assert sample(1234) == first
    # And the seed is what makes them equal: other seeds sample other texts.
    assert len({first, *(sample(seed) for seed in (1, 2, 3))}) > 1


def test_two_threads_share_one_model(adapter: LocalGGUFAdapter) -> None:
    other = LocalGGUFAdapter(Target(kind="local_gguf", base_url=BUNDLED, name="Other card"))
    results: dict[str, Reply] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def generate(name: str, who: LocalGGUFAdapter, question: str) -> None:
        try:
            start.wait()
            results[name] = who.chat([Message("user", question)], GREEDY)
        except BaseException as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)

    threads = [
        threading.Thread(target=generate, args=("a", adapter, "What is the capital of Italy?")),
        threading.Thread(target=generate, args=("b", other, "What is the capital of Spain?")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert set(results) == {"a", "b"}
    assert all(r.text.strip() for r in results.values())
    # Each matches what it gives alone: no interleaving of the two generations.
    assert results["a"].text == adapter.chat(QUESTION, GREEDY).text
    assert adapter._model() is other._model()  # one loaded model, one lock
    assert not adapter._model().lock.locked()


def test_closing_the_stream_early_releases_the_model(adapter: LocalGGUFAdapter) -> None:
    stream = adapter.stream_chat(QUESTION, GenerationParams(max_tokens=50, temperature=0))
    assert isinstance(next(stream), TextDelta)
    assert adapter._model().lock.locked()
    stream.close()  # Stop
    assert not adapter._model().lock.locked()
    assert adapter.chat(QUESTION, GREEDY).text.strip()


def test_connection_passes(adapter: LocalGGUFAdapter) -> None:
    report = adapter.test_connection()
    assert report.ok, report.summary
    assert [s.layer for s in report.steps] == ["Model file", "Loading", "Generation"]
    assert report.steps[0].message.endswith(" MB) is there.")
    assert "gemma" in report.steps[0].message.lower()
    # 2048 unless another card in this process needed a larger context first.
    n_ctx = adapter._model().n_ctx
    assert n_ctx >= local_gguf.DEFAULT_CONTEXT
    assert report.steps[1].message == f"llama.cpp loaded it (context {n_ctx} tokens)."
    assert report.summary.startswith("The model answered: ")
    assert adapter.list_remote_models() == []


def test_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.Q4_K_M.gguf"
    adapter = LocalGGUFAdapter(Target(kind="local_gguf", base_url=str(missing)))
    with pytest.raises(ConfigurationError) as raised:
        adapter.chat(QUESTION, GREEDY)
    assert raised.value.message == (
        f"The model file {missing} does not exist (or is not a file). Check the path in Edit."
    )
    report = adapter.test_connection()
    assert [(s.layer, s.ok) for s in report.steps] == [("Model file", False)]
    assert str(missing) in report.summary


def test_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    junk = tmp_path / "notes.gguf"
    junk.write_bytes(b"these are my notes, not a model\n" * 100)
    adapter = LocalGGUFAdapter(Target(kind="local_gguf", base_url=str(junk)))
    with pytest.raises(ConfigurationError) as raised:
        adapter.chat(QUESTION, GREEDY)
    assert raised.value.message == (
        "llama.cpp could not load notes.gguf. Is it a valid GGUF model file?"
    )
    report = adapter.test_connection()
    assert [(s.layer, s.ok) for s in report.steps] == [("Model file", True), ("Loading", False)]
    assert junk not in local_gguf._loaded


def test_conversation_longer_than_the_context_is_a_bad_request(
    adapter: LocalGGUFAdapter,
) -> None:
    n_ctx = adapter._model().n_ctx  # the shared model's context (2048 by default)
    long = [
        Message("user", "Tell me about rivers. " * (n_ctx // 8)),
        Message("assistant", "Rivers flow to the sea. " * (n_ctx // 8)),
        Message("user", "And lakes?"),
    ]
    tokens = adapter.count_tokens(adapter.prompt(long))
    assert tokens > n_ctx
    with pytest.raises(BadRequest) as raised:
        adapter.chat(long, GREEDY)
    message = raised.value.message
    assert message.startswith(f"The conversation ({tokens + 1} tokens) does not fit")
    assert f"context of {n_ctx} tokens" in message
    assert "Start a new chat or shorten the prompt." in message
    assert not adapter._model().lock.locked()


def test_prompt_uses_the_plain_template(adapter: LocalGGUFAdapter) -> None:
    conversation = [
        Message("system", "Answer in one word."),
        Message("user", "Hi there"),
        Message("assistant", "Hello."),
        Message("user", "Name a colour."),
    ]
    prompt = adapter.prompt(conversation)
    assert adapter.template.name == "plain"
    assert prompt == (
        f"{prompts.PLAIN_SYSTEM}\n"
        "Answer in one word.\n"
        "\n"
        "User: What is the capital of France?\n"
        "Assistant: The capital of France is Paris.\n"
        "User: Hi there\n"
        "Assistant: Hello.\n"
        "User: Name a colour.\n"
        "Assistant:"
    )
    assert "<bos>" not in prompt  # llama.cpp adds BOS itself


def test_another_builtin_template_can_be_chosen(bundled_model: Path) -> None:
    gemma = LocalGGUFAdapter(
        Target(kind="local_gguf", base_url=BUNDLED, settings={"chat_template": "gemma"})
    )
    prompt = gemma.prompt([Message("user", "Hi")])
    assert prompt == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
