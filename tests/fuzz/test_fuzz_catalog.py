"""core/catalog.py: check_url, validate_provider, validate_model, clean_tags.

Validators return {field: message} (or a message) for anything a form or a stored row can
hold, and never raise; what they accept is usable by the layers below (httpx, the adapters).
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlmodel import Session

from core import catalog
from core.catalog import ModelDraft, ProviderDraft, check_url, clean_tags
from core.db import init_db
from core.inference import prompts
from core.inference.custom_api import PRESETS
from core.inference.http import HttpEndpoint, transport_error
from core.inference.openai_compat import normalise_base_url
from core.inference.registry import kinds
from core.inference.target import Auth, Target
from core.settings import Timeouts
from core.tables import ModelCard, Provider
from tests.fuzz.strategies import api_keys, budget, json_values, odd_text

CLIENT = httpx.Client()  # one for every case: a new client builds an SSL context (~30 ms)

# --- URLs ---------------------------------------------------------------------------------------

_label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
dns_hosts = st.lists(
    st.one_of(_label, st.builds(lambda a, b: f"{a}-{b}", _label, _label)), min_size=1, max_size=3
).map(".".join)
hosts = st.one_of(
    dns_hosts,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.sampled_from(["localhost", "münchen.de", "例え.jp", "xn--mnchen-3ya.de", "HOST.Example"]),
)
# What people paste after the host: API roots, endpoint paths, doubled slashes, queries.
segments = st.one_of(
    st.sampled_from(["v1", "chat", "completions", "models", "generate", "", "openai", "api"]),
    st.text(alphabet=string.ascii_letters + string.digits + "-._~%", min_size=1, max_size=6),
)
paths = st.builds(
    lambda parts, slash, query, fragment: (
        ("/" + "/".join(parts) if parts else "") + ("/" if slash else "") + query + fragment
    ),
    st.lists(segments, max_size=4),
    st.booleans(),
    st.one_of(st.just(""), st.sampled_from(["?api-version=2024-02-01", "?a=b/models", "?"])),
    st.one_of(st.just(""), st.sampled_from(["#x", "#/v1", "#"])),
)
ports = st.one_of(st.none(), st.integers(1, 65535))


def url(scheme: str, host: str, port: int | None, path: str, userinfo: str = "") -> str:
    return f"{scheme}://{userinfo}{host}{f':{port}' if port is not None else ''}{path}"


valid_urls = st.builds(
    url, st.sampled_from(["http", "https", "HTTP", "Https"]), hosts, ports, paths
)
# Near misses: URL-shaped text with odd hosts (punycode prefixes, invisible characters…).
url_like = st.builds(
    lambda scheme, host, rest: scheme + host + rest,
    st.sampled_from(["http://", "https://", "", "http:/", "http:", "HTTP://"]),
    st.one_of(hosts, odd_text, st.builds(lambda t: "xn--" + t, odd_text)),
    st.one_of(paths, odd_text),
)


def assert_message(problem: str | None) -> None:
    assert isinstance(problem, str) and problem.strip() and problem.rstrip().endswith(".")


def assert_usable(text: str) -> None:
    """An accepted URL works everywhere below the form: httpx, the adapters, error messages."""
    parsed = httpx.URL(text)
    assert parsed.scheme in ("http", "https") and parsed.host
    base = normalise_base_url(text)
    assert normalise_base_url(base) == base
    assert (httpx.URL(base).host, httpx.URL(base).port) == (parsed.host, parsed.port)
    endpoint = HttpEndpoint(CLIENT, text)
    endpoint.client.build_request("POST", endpoint.url("chat/completions"))
    endpoint.client.build_request("POST", HttpEndpoint(endpoint.client, base).url("models"))
    assert transport_error(httpx.ConnectError("[Errno 111] refused"), text, Timeouts()).message


@budget(800)
@given(st.one_of(url_like, odd_text))
@example("http://xn--.com")  # IDNAError escaped check_url (the host is decoded lazily)
@example("http://xn--a.com/v1")
def test_check_url_answers_every_text_with_none_or_a_sentence(text: str) -> None:
    problem = check_url(text)
    if problem is None:
        assert_usable(text)
    else:
        assert_message(problem)


@budget(500)
@given(valid_urls)
@example("http://models")  # normalise_base_url cut the host itself: http://v1
@example("http://h?a=b")  # normalise_base_url appended /v1 to the query (not idempotent)
@example("http://h/models/models")
@example("http://h/x//chat/completions")
def test_check_url_accepts_http_urls_and_they_are_usable(text: str) -> None:
    assert check_url(text) is None, text
    assert_usable(text)


@st.composite
def broken_urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https"]))
    host, port, path = draw(hosts), draw(ports), draw(paths)
    how = draw(st.sampled_from(["space", "scheme", "userinfo", "port", "empty", "no_host"]))
    if how == "space":
        text = url(scheme, host, port, path)
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from([" ", "\t", "\n", "\u3000", "\xa0"])) + text[at:]
    if how == "scheme":
        other = draw(st.sampled_from(["ftp", "file", "ws", "wss", "gopher", "htp", "mailto"]))
        return url(other, host, port, path)
    if how == "userinfo":
        user = draw(st.text(alphabet=string.ascii_letters + string.digits, min_size=1))
        return url(scheme, host, port, path, userinfo=f"{user}:{user}@")
    if how == "port":
        bad = draw(st.one_of(st.just(0), st.integers(65536, 10**7)))
        return url(scheme, host, bad, path)
    if how == "no_host":
        return f"{scheme}://{f':{port}' if port is not None else ''}{path}"
    return ""


@budget(500)
@given(broken_urls())
def test_check_url_rejects_with_a_message(text: str) -> None:
    assert_message(check_url(text))


# --- tags ---------------------------------------------------------------------------------------


@budget(300)
@given(st.lists(odd_text, max_size=12))
def test_clean_tags_is_stripped_unique_and_idempotent(tags: list[str]) -> None:
    cleaned = clean_tags(tags)
    assert all(t == t.strip() and t for t in cleaned)
    assert len({t.lower() for t in cleaned}) == len(cleaned)
    assert clean_tags(cleaned) == cleaned
    assert {t.lower() for t in cleaned} == {t.strip().lower() for t in tags if t.strip()}


# --- validate_provider / validate_model -----------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = init_db(f"sqlite:///{tmp_path_factory.mktemp('fuzzdb') / 'catalog.db'}")
    with Session(engine) as session:  # names to clash with
        provider = Provider(name="Taken", kind="openai_compat", base_url="http://x")
        session.add(provider)
        session.flush()
        session.add(ModelCard(provider_id=provider.id or 0, display_name="Taken"))
        session.commit()
    yield engine
    engine.dispose()


KINDS = sorted(kinds())
TEMPLATE_SOURCES = [t.source for t in prompts.BUILTIN_TEMPLATES.values()]
EXPRESSIONS = [e for p in PRESETS.values() for e in (p.request_expression, p.response_expression)]


def either(typed: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """A value of the expected shape, most of the time, else any JSON."""
    return st.one_of(typed, typed, json_values)


provider_settings = st.builds(
    lambda fixed, extra: {**extra, **fixed},
    st.fixed_dictionaries(
        {},
        optional={
            "chat_template": either(st.sampled_from([*prompts.BUILTIN_TEMPLATES, "custom", "x"])),
            "custom_template": either(st.one_of(st.sampled_from(TEMPLATE_SOURCES), odd_text)),
            "template_stop": either(st.lists(odd_text, max_size=3)),
            "request_expression": either(st.one_of(st.sampled_from(EXPRESSIONS), odd_text)),
            "response_expression": either(st.one_of(st.sampled_from(EXPRESSIONS), odd_text)),
            "response_type": either(st.sampled_from(["string", "boolean", "text"])),
            "batch_size": either(st.integers(-3, 2000)),
            "multi_turn": either(st.booleans()),
            "enable_retry": either(st.booleans()),
            "preset": either(st.sampled_from([*PRESETS, "x"])),
        },
    ),
    st.dictionaries(st.text(max_size=8), json_values, max_size=2),
)
# A key copied from a chat or a document: an invisible or typographic character slipped in.
pasted_keys = st.builds(
    lambda key, char, at: key[:at] + char + key[at:],
    api_keys,
    st.sampled_from(["\u200b", "\u2013", "…", "\x00", "é", "\ufeff", "\x7f"]),
    st.integers(0, 60),
)
header_names = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "-", min_size=1, max_size=12), odd_text
)
timeouts = st.one_of(st.none(), st.floats(), st.integers(-5, 5000), st.sampled_from([True, 0]))

provider_drafts = st.builds(
    ProviderDraft,
    name=st.one_of(odd_text, st.sampled_from(["Taken", " taken ", "x" * 201])),
    kind=st.sampled_from([*KINDS, "nope"]),
    base_url=st.one_of(valid_urls, valid_urls, odd_text, st.sampled_from(["~nosuchuser/m.gguf"])),
    auth_type=st.sampled_from(["none", "bearer", "api_key", "basic"]),
    api_key=st.one_of(st.none(), api_keys, api_keys, pasted_keys, odd_text),
    auth_header=st.one_of(st.just("Authorization"), header_names),
    auth_prefix=st.one_of(st.just(""), st.sampled_from(["Bearer", "Token"]), odd_text),
    extra_headers=st.dictionaries(header_names, odd_text, max_size=3),
    settings=provider_settings,
    connect_timeout=timeouts,
    read_timeout=timeouts,
)

PROVIDER_FIELDS = {
    "provider_name",
    "kind",
    "base_url",
    "auth_type",
    "api_key",
    "auth_header",
    "auth_prefix",
    "extra_headers",
    "connect_timeout",
    "read_timeout",
}


def assert_errors(errors: object, fields: set[str]) -> None:
    assert isinstance(errors, dict)
    for key, message in errors.items():
        assert key in fields or key.startswith(("settings.", "params.")), key
        assert isinstance(message, str) and message.strip(), (key, message)


@budget(200)
@given(provider_drafts, st.sampled_from([None, 1, 2]))
@example(  # a key with an invisible character passed, then no request could carry it
    ProviderDraft("p", "openai_compat", "http://h/v1", api_key="sk-abc\u200bdefghijkl"),
    None,
)
@example(ProviderDraft("p", "tgi", "http://h", settings={"chat_template": ["plain"]}), None)
@example(ProviderDraft("p", "tgi", "http://h", settings={"template_stop": 5}), None)
@example(ProviderDraft("p", "openai_compat", "http://h", connect_timeout=float("nan")), None)
@example(ProviderDraft("p", "local_gguf", "~nosuchuser/m.gguf", auth_type="none"), None)
def test_validate_provider_returns_field_messages(
    engine: Engine, draft: ProviderDraft, provider_id: int | None
) -> None:
    with Session(engine) as session:
        errors = catalog.validate_provider(session, draft, provider_id=provider_id)
    assert_errors(errors, PROVIDER_FIELDS)
    if errors:
        return
    # Accepted: every layer below can use it.
    for value in (draft.connect_timeout, draft.read_timeout):
        assert value is None or 0 < value <= 3600
    if draft.kind == "local_gguf":
        return
    assert check_url(draft.base_url.strip()) is None
    secret = (draft.api_key or "").strip() or "stored-key-0123456789"
    target = Target(
        kind=draft.kind,
        base_url=draft.base_url.strip(),
        model="m",
        auth=Auth(
            draft.auth_type,  # type: ignore[arg-type]
            secret,
            draft.auth_header.strip() or "Authorization",
            draft.auth_prefix.strip(),
        ),
        headers={k.strip(): v.strip() for k, v in draft.extra_headers.items()},
        settings={**kinds()[draft.kind].settings_defaults, **draft.settings},
        max_retries=0,
    )
    httpx.Request("POST", target.base_url, headers=target.request_headers())
    kinds()[draft.kind].make_adapter(target, CLIENT)


model_params = st.dictionaries(
    st.sampled_from(
        ["temperature", "max_tokens", "top_p", "top_k", "stop", "seed", "n", "best_of", "x"]
    ),
    st.one_of(
        json_values,
        st.integers(-10, 10**7),
        st.floats(-3, 3),
        st.lists(odd_text, max_size=5),
    ),
    max_size=5,
)
model_drafts = st.builds(
    ModelDraft,
    display_name=st.one_of(odd_text, st.sampled_from(["Taken", "TAKEN ", "y" * 201])),
    remote_model=st.one_of(odd_text, st.just("z" * 501)),
    description=odd_text,
    tags=st.lists(st.one_of(odd_text, st.just("t" * 41)), max_size=22),
    context_length=st.one_of(
        st.none(), st.integers(-5, 10**8), st.floats(), st.booleans(), st.just(10**400)
    ),
    default_params=model_params,
    enabled=st.booleans(),
)
MODEL_FIELDS = {"display_name", "remote_model", "tags", "context_length"}


@budget(250)
@given(model_drafts, st.sampled_from([*KINDS, "nope"]), st.sampled_from([None, 1, 2]))
@example(ModelDraft("m", default_params={"max_tokens": 10**400}), "openai_compat", None)
def test_validate_model_returns_field_messages(
    engine: Engine, draft: ModelDraft, kind: str, model_id: int | None
) -> None:
    with Session(engine) as session:
        errors = catalog.validate_model(session, draft, kind, model_id=model_id)
    assert_errors(errors, MODEL_FIELDS)
    if not errors:
        assert 0 < len(draft.display_name.strip()) <= 200
        assert len(clean_tags(draft.tags)) <= catalog.MAX_TAGS


@budget(100)
@given(st.one_of(odd_text, st.sampled_from(["~nosuchuser/x.gguf", "~/x.gguf", "/dev/null"])))
def test_model_file_check_answers_with_a_message(path: str) -> None:
    problem = catalog._check_model_file(path)
    if problem is not None:
        assert_message(problem)
    else:
        assert path == catalog.BUNDLED or Path(path).expanduser().is_file()
