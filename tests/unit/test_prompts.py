"""core/inference/prompts.py: built-in chat templates, custom templates, and their sandbox."""

from __future__ import annotations

import pytest

from core.inference import local_gguf
from core.inference.prompts import (
    BUILTIN_TEMPLATES,
    EXAMPLE_CONVERSATION,
    PLAIN_SYSTEM,
    ChatTemplate,
    check_template,
    render,
    resolve,
)
from core.inference.types import ConfigurationError, Message

# For each built-in: the markers that open a system, user and assistant turn, and the text
# that must end the prompt so the model writes the assistant's reply next.
MARKERS: dict[str, dict[str, str]] = {
    "plain": {"user": "User: ", "assistant": "Assistant: ", "end": "Assistant:"},
    "chatml": {
        "system": "<|im_start|>system\n",
        "user": "<|im_start|>user\n",
        "assistant": "<|im_start|>assistant\n",
        "end": "<|im_start|>assistant\n",
    },
    "llama2": {"user": "[INST] ", "assistant": "[/INST] ", "end": "[/INST]"},
    "llama3": {
        "system": "<|start_header_id|>system<|end_header_id|>\n\n",
        "user": "<|start_header_id|>user<|end_header_id|>\n\n",
        "assistant": "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "end": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    },
    "mistral": {"user": "[INST] ", "assistant": "[/INST]", "end": "[/INST]"},
    "gemma": {
        "user": "<start_of_turn>user\n",
        "assistant": "<start_of_turn>model\n",
        "end": "<start_of_turn>model\n",
    },
    "zephyr": {
        "system": "<|system|>\n",
        "user": "<|user|>\n",
        "assistant": "<|assistant|>\n",
        "end": "<|assistant|>\n",
    },
}


def test_every_builtin_template_is_covered_here() -> None:
    assert set(BUILTIN_TEMPLATES) == set(MARKERS)


@pytest.mark.parametrize("name", sorted(MARKERS))
def test_builtin_renders_the_example_with_its_role_markers(name: str) -> None:
    template = BUILTIN_TEMPLATES[name]
    prompt = render(template, EXAMPLE_CONVERSATION)
    markers = MARKERS[name]
    turn_markers = {
        role: markers[role] for role in ("user", "assistant", "system") if role in markers
    }
    for message in EXAMPLE_CONVERSATION:
        assert message.content in prompt, (name, message)
        if message.role not in turn_markers:
            continue
        # The nearest turn marker before the message's text is its own role's.
        at = prompt.index(message.content)
        nearest = max(turn_markers, key=lambda role: prompt.rfind(turn_markers[role], 0, at))
        assert nearest == message.role, (name, message.role, prompt)
    assert prompt.endswith(markers["end"]), (name, prompt[-80:])
    # The turns come in the conversation's order.
    positions = [prompt.index(m.content) for m in EXAMPLE_CONVERSATION if m.role != "system"]
    assert positions == sorted(positions)
    assert check_template(template.source) is None


@pytest.mark.parametrize("name", sorted(MARKERS))
def test_previous_assistant_turns_are_closed_with_the_end_of_turn_text(name: str) -> None:
    template = BUILTIN_TEMPLATES[name]
    prompt = render(template, EXAMPLE_CONVERSATION)
    reply = "I am an assistant. How can I help?"
    after = prompt[prompt.index(reply) + len(reply) :]
    closing = {
        "plain": "\nUser:",
        "chatml": "<|im_end|>",
        "llama2": " </s>",
        "llama3": "<|eot_id|>",
        "mistral": "</s>",
        "gemma": "<end_of_turn>",
        "zephyr": "</s>",
    }[name]
    assert after.startswith(closing)
    # And the stop sequences a completion endpoint gets would end the model's own turn.
    assert any(stop.strip() in closing for stop in template.stop)


def test_the_system_prompt_appears_once_for_templates_that_fold_it_into_a_turn() -> None:
    for name in ("llama2", "mistral", "gemma"):
        prompt = render(BUILTIN_TEMPLATES[name], EXAMPLE_CONVERSATION)
        assert prompt.count("You are a helpful assistant.") == 1, name
    llama2 = render(BUILTIN_TEMPLATES["llama2"], EXAMPLE_CONVERSATION)
    assert "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello!" in llama2
    gemma = render(BUILTIN_TEMPLATES["gemma"], EXAMPLE_CONVERSATION)
    assert "<start_of_turn>user\nYou are a helpful assistant.\n\nHello!" in gemma
    mistral = render(BUILTIN_TEMPLATES["mistral"], EXAMPLE_CONVERSATION)
    assert "[INST] You are a helpful assistant.\n\nTell me a joke. [/INST]" in mistral


def test_without_generation_prompt_the_prompt_does_not_open_an_assistant_turn() -> None:
    for name in ("chatml", "llama3", "gemma", "zephyr", "plain"):
        template = BUILTIN_TEMPLATES[name]
        with_prompt = render(template, EXAMPLE_CONVERSATION)
        without = render(template, EXAMPLE_CONVERSATION, add_generation_prompt=False)
        assert not without.endswith(MARKERS[name]["end"]), name
        assert with_prompt.startswith(without.rstrip("\n")), name


def test_plain_template_for_the_bundled_base_model() -> None:
    assert local_gguf.SPEC.settings_defaults == {"chat_template": "plain"}
    assert resolve({}) is BUILTIN_TEMPLATES["plain"]
    prompt = render(
        resolve({"chat_template": "plain"}),
        [Message("system", "Answer in French."), Message("user", "Hi there")],
        include_bos=False,
    )
    assert prompt.startswith(PLAIN_SYSTEM)
    assert "Answer in French." in prompt
    # A one-shot example teaches the base model the turn format before the real turn.
    example = "User: What is the capital of France?\nAssistant: The capital of France is Paris."
    assert prompt.index(example) < prompt.index("User: Hi there")
    assert prompt.endswith("User: Hi there\nAssistant:")
    assert BUILTIN_TEMPLATES["plain"].stop == ("\nUser:", "User:")


@pytest.mark.parametrize(
    ("name", "bos"),
    [("llama2", "<s>"), ("llama3", "<|begin_of_text|>"), ("mistral", "<s>"), ("gemma", "<bos>")],
)
def test_include_bos(name: str, bos: str) -> None:
    template = BUILTIN_TEMPLATES[name]
    assert template.bos_token == bos
    assert render(template, EXAMPLE_CONVERSATION).startswith(bos)
    without = render(template, EXAMPLE_CONVERSATION, include_bos=False)
    assert bos not in without
    assert "Tell me a joke." in without


def test_resolve_custom_and_unknown() -> None:
    custom = resolve(
        {
            "chat_template": "custom",
            "custom_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
            "template_stop": ["###", ""],
        }
    )
    assert custom.name == "custom" and custom.stop == ("###",)
    assert render(custom, [Message("user", "hi")]) == "hi"
    with pytest.raises(ConfigurationError, match="Unknown chat template 'nope'"):
        resolve({"chat_template": "nope"})


# --- check_template: what a person typed ------------------------------------------------------


def test_a_good_custom_template_passes() -> None:
    source = "{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}### assistant:"
    assert check_template(source) is None


def test_a_hugging_face_style_template_passes() -> None:
    source = (
        "{{ bos_token }}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) and message['role'] != "
        "'system' %}{% endif %}"
        "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
    )
    assert check_template(source) is None


def test_empty_template() -> None:
    assert check_template("   \n") == "The template is empty."


def test_syntax_error_names_the_line() -> None:
    source = "{% for m in messages %}\n{{ m.role }}\n{{ m.content }\n{% endfor %}"
    problem = check_template(source)
    assert problem is not None
    assert problem.startswith("Template syntax error on line 3:")


def test_unclosed_block_is_a_syntax_error() -> None:
    problem = check_template("intro\n{% for m in messages %}{{ m.content }}")
    assert problem is not None and "syntax error" in problem and "endfor" in problem


def test_a_template_that_ignores_the_content_is_refused() -> None:
    problem = check_template("{% for m in messages %}<{{ m.role }}>{% endfor %}")
    assert problem == "The template does not include the messages' content (use {{ m.content }})."


def test_raise_exception_reports_the_templates_own_message() -> None:
    source = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ m.content }}{% endfor %}"
    )
    problem = check_template(source)
    assert problem is not None and "System role not supported" in problem
    # Rendering a conversation the template accepts still works.
    assert render(ChatTemplate("c", "c", source), [Message("user", "fine")]) == "fine"
    with pytest.raises(ConfigurationError) as caught:
        render(ChatTemplate("c", "My template", source), EXAMPLE_CONVERSATION)
    assert caught.value.message == (
        "The chat template 'My template' failed: System role not supported"
    )


def test_a_runtime_error_in_a_template_is_a_configuration_error() -> None:
    source = (
        "{{ messages[0].content | int // 0 }}{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    with pytest.raises(ConfigurationError, match="failed"):
        render(ChatTemplate("c", "c", source), [Message("user", "7")])


# --- the sandbox ------------------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{% set _ = messages.append({'role': 'user', 'content': 'injected'}) %}",
    "{% set _ = messages[0].update({'content': 'changed'}) %}",
    "{{ self.__init__.__globals__.__builtins__ }}",
]


@pytest.mark.parametrize("escape", ESCAPES)
def test_templates_cannot_reach_python_internals(escape: str) -> None:
    source = escape + "{% for m in messages %}{{ m.content }}{% endfor %}"
    problem = check_template(source)
    assert problem is not None
    assert "unsafe" in problem or "undefined" in problem.lower()
    with pytest.raises(ConfigurationError) as caught:
        render(ChatTemplate("c", "c", source), EXAMPLE_CONVERSATION)
    text = f"{caught.value.message} {caught.value.detail}"
    assert "<class" not in text and "subprocess" not in text and "uid=" not in text


@pytest.mark.parametrize(
    "unsafe", ["''.__class__", "raise_exception.__globals__", "messages.__len__", "cycler._x"]
)
def test_an_unsafe_attribute_renders_as_nothing_rather_than_leaking(unsafe: str) -> None:
    source = "[{{ " + unsafe + " }}]{% for m in messages %}{{ m.content }}{% endfor %}"
    prompt = render(ChatTemplate("c", "c", source), [Message("user", "hi")])
    assert prompt == "[]hi"


def test_a_template_cannot_change_the_conversation() -> None:
    messages = [Message("user", "original")]
    source = "{% set _ = messages.pop() %}{% for m in messages %}{{ m.content }}{% endfor %}"
    with pytest.raises(ConfigurationError, match="unsafe"):
        render(ChatTemplate("c", "c", source), messages)
    assert messages == [Message("user", "original")]


def test_stop_filter_cuts_at_a_marker_and_drops_one_cut_short():
    from core.inference.prompts import StopFilter

    cut = StopFilter(["\nUser:", "User:"])
    assert (
        "".join(cut.feed(t) for t in [" Paris", ".\n", "User", ": more"]) + cut.flush() == " Paris."
    )
    short = StopFilter(["\nUser:"])
    assert (
        "".join(short.feed(t) for t in [" I know", ".", "\n", "User"]) + short.flush() == " I know."
    )
    kept = StopFilter(["\nUser:"])
    assert "".join(kept.feed(t) for t in ["a\n", "b", "\nUs", "ed"]) + kept.flush() == "a\nb\nUsed"
