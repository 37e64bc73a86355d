"""core/inference/http.py: server_message, status_error, parse_retry_after, stream_error,
parse_json — whatever a server sends, a typed error with a plain message and no secret.
"""

from __future__ import annotations

import email.utils
import json
import math
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from core import secrets
from core.inference.http import (
    DETAIL_LIMIT,
    parse_json,
    parse_retry_after,
    server_message,
    status_error,
    stream_error,
)
from core.inference.types import BadResponse, InferenceError
from tests.fuzz.strategies import (
    api_keys,
    assert_plain_error,
    budget,
    deep_json,
    json_values,
    odd_text,
    to_json_bytes,
)

URL = "http://127.0.0.1:9/v1/chat/completions"

error_bodies = st.one_of(
    odd_text,
    json_values.map(json.dumps),
    st.builds(
        lambda m, t, c: json.dumps({"error": {"message": m, "type": t, "code": c}}),
        odd_text,
        odd_text,
        st.sampled_from([None, "insufficient_quota", "invalid_api_key"]),
    ),
    st.builds(lambda d: json.dumps({"detail": d}), json_values),
    st.builds(
        lambda title, rest: f"<!DOCTYPE html><html><head><title>{title}</title>{rest}</html>",
        odd_text,
        odd_text,
    ),
    deep_json.map(lambda b: b.decode()),
    st.just("<html><title>" + "t" * 5000 + "</title></html>"),
)


# scrub() masks a cut-off start of a secret from this many characters on (core/secrets.py).
RUN = getattr(secrets, "PARTIAL", 10)


def leaked_runs(secret: str, text: str, without_secret: str = "") -> list[str]:
    """Every RUN-character piece of `secret` found in `text` (far more than a mask shows),
    except pieces the message also holds when the key is not in the body at all: a
    generated key such as ``sk-0000endpoint`` shares "endpoint" with our own wording."""
    runs = (secret[i : i + RUN] for i in range(len(secret) - RUN + 1))
    return [run for run in runs if run in text and run not in without_secret]


@st.composite
def bodies_with_a_secret(draw: st.DrawFn) -> tuple[str, str]:
    """An error body that echoes the API key somewhere — also across a truncation point."""
    secret = draw(api_keys)
    at = draw(st.one_of(st.integers(0, 400), st.integers(DETAIL_LIMIT - 60, DETAIL_LIMIT + 10)))
    filler = draw(st.sampled_from(["x", " ", "é"])) * at
    shape = draw(st.sampled_from(["text", "json", "html"]))
    said = f"{filler}Incorrect API key provided: {secret}. More text."
    if shape == "json":
        return secret, json.dumps({"error": {"message": said}})
    if shape == "html":
        return secret, f"<html><title>{said}</title></html>"
    return secret, said


@budget(500)
@given(error_bodies)
@example("[" * 100_000)  # RecursionError from json.loads
@example("<html><title>" + "t" * 5000 + "</title></html>")
def test_server_message_is_short_text(body: str) -> None:
    said = server_message(body)
    assert isinstance(said, str) and len(said) <= 500


@budget(600)
@given(st.integers(100, 999), error_bodies, st.one_of(st.none(), st.floats(0, 1e6)))
@example(500, "[" * 100_000, None)
def test_status_error_is_typed_and_plain(status: int, body: str, retry_after: float | None) -> None:
    err = status_error(status, body, url=URL, reason="Reason", retry_after=retry_after)
    assert_plain_error(err)
    assert err.status == status
    assert err.retryable == (type(err).retryable)


@budget(300)
@given(st.integers(400, 599), bodies_with_a_secret())
@example(  # the key cut in half by the excerpt's end: its first half was left unmasked
    500, ("sk-" + "k" * 40, "x" * (DETAIL_LIMIT - 40) + "key sk-" + "k" * 40)
)
@example(401, ("sk-" + "q" * 40, "x" * 280 + " sk-" + "q" * 40))  # cut at 300 chars
@example(400, ("sk-0000endpoint", "Incorrect API key provided: sk-0000endpoint. More text."))
def test_status_error_never_shows_more_of_a_key_than_its_mask(
    status: int, case: tuple[str, str]
) -> None:
    secret, body = case
    err = status_error(status, body, url=URL, secrets=(secret,))
    plain = status_error(status, body.replace(secret, "KEY"), url=URL, secrets=(secret,))
    assert not leaked_runs(secret, err.message, plain.message), err.message
    assert not leaked_runs(secret, err.detail, plain.detail), err.detail


retry_after_values = st.one_of(
    odd_text,
    st.floats().map(str),
    st.integers(-(10**30), 10**30).map(str),
    st.datetimes().map(lambda d: email.utils.format_datetime(d)),
    st.builds(
        lambda day, year, tz: f"Mon, {day:02d} Jan {year} 00:00:00 {tz}",
        st.integers(0, 40),
        st.integers(0, 10**25),
        st.sampled_from(["GMT", "+0000", "-9999", "+2400", "XYZ"]),
    ),
)


@budget(600)
@given(st.one_of(st.none(), retry_after_values))
@example("Mon, 01 Jan 99999999999999999999 00:00:00 GMT")  # OverflowError
@example("inf")
def test_retry_after_is_none_or_a_finite_wait(value: str | None) -> None:
    wait = parse_retry_after(value)
    assert wait is None or (isinstance(wait, float) and math.isfinite(wait) and wait >= 0)


@budget(300)
@given(json_values)
def test_an_error_event_in_a_stream_is_typed(payload: Any) -> None:
    err = stream_error(payload, url=URL, secrets=("sk-abcdefghijklmnop",))
    assert_plain_error(err)
    assert err.message.startswith("The model stopped with an error mid-reply")


@budget(600)
@given(
    st.one_of(
        st.binary(max_size=60),
        odd_text.map(str.encode),
        json_values.map(to_json_bytes),
        deep_json,
        st.sampled_from([b"", b"  ", b"\xef\xbb\xbf{}", b"NaN", b"<html><title>x</title>"]),
    )
)
@example(b"[" * 100_000)
@example(b"[" * 1000 + b"]" * 1000)
def test_parse_json_parses_or_says_bad_response(raw: bytes) -> None:
    try:
        parse_json(raw, URL)
    except InferenceError as err:
        assert isinstance(err, BadResponse)
        assert_plain_error(err)
