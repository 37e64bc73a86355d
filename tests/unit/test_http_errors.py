"""The pure parts of the httpx seam (core/inference/http.py): status codes, error bodies,
Retry-After, secret scrubbing, errors inside a stream and transport failures, each turned
into a typed error whose message says the cause in plain words.
"""

from __future__ import annotations

import email.utils
import json
import time

import httpx
import pytest

from core.inference.http import (
    parse_retry_after,
    server_message,
    status_error,
    stream_error,
    transport_error,
)
from core.inference.types import (
    AuthFailed,
    BadRequest,
    BadResponse,
    ConnectionFailed,
    InferenceError,
    NotFound,
    RateLimited,
    RequestTimedOut,
    ServerError,
    StreamInterrupted,
)
from core.settings import Timeouts

URL = "http://models.example.test:8080/v1/chat/completions"
KEY = "sk-proj-Zq8wXv2LkT9mNcR4bY7uHs1e"


def openai_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def err_for(
    status: int, body: str = "", *, reason: str = "", retry_after: float | None = None
) -> InferenceError:
    return status_error(status, body, url=URL, reason=reason, retry_after=retry_after)


# --- status_error -------------------------------------------------------------------------------


def test_401_names_the_key_and_keeps_what_the_server_said() -> None:
    body = openai_body("Incorrect API key provided: sk-PM***E873.", code="invalid_api_key")
    err = err_for(401, body, reason="Unauthorized")
    assert type(err) is AuthFailed
    assert err.kind == "auth" and err.status == 401
    assert err.message == (
        "The endpoint rejected the API key (401): Incorrect API key provided: sk-PM***E873. "
        "Check the key in Edit."
    )
    assert str(err) == err.message
    assert err.detail.startswith(f"HTTP 401 Unauthorized from POST {URL}\n")
    assert '"code": "invalid_api_key"' in err.detail


def test_403_says_access_was_refused() -> None:
    err = err_for(403, openai_body("Country, region, or territory not supported"))
    assert type(err) is AuthFailed
    assert "refused access (403): Country, region, or territory not supported." in err.message
    assert "may not be allowed to use this model" in err.message


def test_404_points_at_the_url_and_model_name() -> None:
    err = err_for(404, openai_body("The model `gpt-9` does not exist", code="model_not_found"))
    assert type(err) is NotFound
    assert err.kind == "not_found"
    assert f"Nothing was found at {URL} (404): The model `gpt-9` does not exist." in err.message
    assert "does it need /v1?" in err.message


@pytest.mark.parametrize("status", [400, 409, 413, 415, 422])
def test_request_errors_are_bad_requests(status: int) -> None:
    err = err_for(status, openai_body("'messages' is a required property"))
    assert type(err) is BadRequest
    assert err.status == status
    assert err.message == (
        f"The endpoint rejected the request ({status}): 'messages' is a required property."
    )
    assert not err.retryable


def test_422_fastapi_validation_detail_names_the_field() -> None:
    body = json.dumps(
        {"detail": [{"loc": ["body", "temperature"], "msg": "ensure this value is <= 2"}]}
    )
    err = err_for(422, body)
    assert type(err) is BadRequest
    assert err.message == (
        "The endpoint rejected the request (422): body.temperature: ensure this value is <= 2."
    )


def test_408_is_a_timeout() -> None:
    err = err_for(408, "")
    assert type(err) is RequestTimedOut
    assert err.message == "The endpoint timed out handling the request (408)."


def test_429_without_retry_after() -> None:
    err = err_for(429, openai_body("Rate limit reached for requests", code="rate_limit_exceeded"))
    assert type(err) is RateLimited
    assert err.retryable and err.retry_after is None
    assert err.message == (
        "The endpoint is rate limiting requests (429): Rate limit reached for requests. "
        "Wait a moment and try again."
    )
    assert "asked to wait" not in err.message


def test_429_with_retry_after_says_how_long() -> None:
    err = err_for(429, openai_body("Slow down"), retry_after=7.0)
    assert type(err) is RateLimited
    assert err.retry_after == 7.0
    assert "(429): Slow down. It asked to wait 7 s. Wait a moment" in err.message


def test_429_insufficient_quota_is_about_billing() -> None:
    body = openai_body(
        "You exceeded your current quota, please check your plan and billing details.",
        type_="insufficient_quota",
        code="insufficient_quota",
    )
    err = err_for(429, body, retry_after=3.0)
    assert type(err) is RateLimited
    assert err.message.startswith("The account behind this API key is out of quota (429): ")
    assert err.message.endswith("Check its plan and billing.")
    assert "Wait a moment" not in err.message


def test_500_internal_error() -> None:
    err = err_for(500, openai_body("The server had an error while processing your request"))
    assert type(err) is ServerError
    assert err.retryable
    assert err.message == (
        "The endpoint had an internal error (500): The server had an error while processing "
        "your request. Try again later."
    )


def test_502_html_from_a_proxy_is_summarised_by_its_title() -> None:
    page = (
        "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
        "<body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"
    )
    err = err_for(502, page)
    assert type(err) is ServerError
    assert err.message == (
        "The endpoint had an internal error (502): an HTML page: 502 Bad Gateway. Try again later."
    )
    assert "<h1>" not in err.message
    assert "<h1>502 Bad Gateway</h1>" in err.detail


def test_503_is_unavailable_or_loading() -> None:
    err = err_for(503, json.dumps({"error": "Model is loading", "error_type": "overloaded"}))
    assert type(err) is ServerError
    assert err.message == (
        "The model is unavailable or still loading (503): Model is loading. Try again shortly."
    )


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_ask_for_the_final_address(status: int) -> None:
    err = err_for(status, "")
    assert type(err) is BadRequest
    assert f"redirected the request ({status})" in err.message
    assert "https://" in err.message


def test_unexpected_status_is_a_bad_response() -> None:
    err = err_for(418, "I'm a teapot")
    assert type(err) is BadResponse
    assert err.message == "The endpoint answered with an unexpected status 418: I'm a teapot."


def test_empty_body_gives_a_sentence_without_a_dangling_colon() -> None:
    err = err_for(400, "   ")
    assert err.message == "The endpoint rejected the request (400)."


def test_detail_is_bounded() -> None:
    err = err_for(500, "x" * 50_000)
    assert len(err.detail) < 2200
    assert len(err.message) < 600


# --- server_message ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (openai_body("Invalid 'temperature'"), "Invalid 'temperature'"),  # OpenAI
        (  # TGI
            json.dumps({"error": "Input validation error: `inputs` must not be empty"}),
            "Input validation error: `inputs` must not be empty",
        ),
        (json.dumps({"detail": "Not Found"}), "Not Found"),  # FastAPI
        (  # FastAPI validation list
            json.dumps(
                {
                    "detail": [
                        {"loc": ["body", "messages"], "msg": "field required", "type": "missing"},
                        {"loc": ["body", "model"], "msg": "str type expected", "type": "t"},
                    ]
                }
            ),
            "body.messages: field required; body.model: str type expected",
        ),
        (json.dumps({"message": "Forbidden"}), "Forbidden"),  # API gateways
        (json.dumps({"error": {"message": ""}, "detail": "used instead"}), "used instead"),
        (
            "<html><head><title>404 Not Found</title></head><body>nope</body></html>",
            "an HTML page: 404 Not Found",
        ),
        ("<!DOCTYPE html><html><body>no title</body></html>", "an HTML page"),
        (
            "upstream connect error or disconnect/reset",
            "upstream connect error or disconnect/reset",
        ),
        ("", ""),
        (json.dumps({"unrelated": 1}), ""),
    ],
)
def test_server_message(body: str, expected: str) -> None:
    assert server_message(body) == expected


def test_server_message_cuts_long_plain_text() -> None:
    assert server_message("a" * 1000) == "a" * 300


# --- parse_retry_after ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5.0), (" 2.5 ", 2.5), ("0", 0.0), ("-3", 0.0), (None, None), ("", None), ("soon", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date_in_the_future() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    seconds = parse_retry_after(when)
    assert seconds is not None
    assert 100 < seconds <= 120


def test_parse_retry_after_http_date_in_the_past_means_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


# --- secrets -------------------------------------------------------------------------------------


def test_secrets_are_scrubbed_from_message_and_detail() -> None:
    body = openai_body(f"Incorrect API key provided: {KEY}.", code="invalid_api_key")
    err = status_error(401, body, url=URL, secrets=(KEY,))
    assert KEY not in err.message
    assert KEY not in err.detail
    assert "sk-…Hs1e" in err.message  # the masked form, so the person can tell which key
    assert "sk-…Hs1e" in err.detail


def test_secrets_are_scrubbed_from_stream_errors() -> None:
    payload = {"error": {"message": f"key {KEY} was revoked", "type": "server_error"}}
    err = stream_error(payload, url=URL, secrets=(KEY,))
    assert KEY not in err.message and KEY not in err.detail
    assert "sk-…Hs1e" in err.message


# --- stream_error --------------------------------------------------------------------------------


def test_stream_error_object() -> None:
    payload = {"error": {"message": "The model crashed.", "type": "server_error", "code": None}}
    err = stream_error(payload, url=URL)
    assert type(err) is ServerError
    assert err.message == "The model stopped with an error mid-reply: The model crashed."
    assert err.detail.startswith(f"error event in the stream from {URL}\n")
    assert "server_error" in err.detail


def test_stream_error_string() -> None:
    err = stream_error({"error": "CUDA out of memory"}, url=URL)
    assert type(err) is ServerError
    assert err.message == "The model stopped with an error mid-reply: CUDA out of memory"


def test_stream_error_bare_string_payload() -> None:
    err = stream_error("worker died", url=URL)
    assert type(err) is ServerError
    assert err.message.endswith("mid-reply: worker died")


def test_stream_error_without_a_message() -> None:
    err = stream_error({"error": {"type": "server_error"}}, url=URL)
    assert err.message == "The model stopped with an error mid-reply: no message"


@pytest.mark.parametrize(
    ("status", "cls"),
    [(429, RateLimited), (401, AuthFailed), (400, BadRequest), (503, ServerError)],
)
def test_stream_error_with_http_status_code_maps_like_a_status(
    status: int, cls: type[InferenceError]
) -> None:
    payload = {"error": {"message": "Too many requests", "http_status_code": status}}
    err = stream_error(payload, url=URL)
    assert type(err) is cls
    assert err.status == status
    assert err.message.startswith("The model stopped with an error mid-reply: ")
    assert f"({status})" in err.message
    assert "Too many requests" in err.message
    assert str(err) == err.message


def test_stream_error_ignores_a_non_error_status_number() -> None:
    err = stream_error({"error": {"message": "odd", "status": 200}}, url=URL)
    assert type(err) is ServerError
    assert err.status is None


# --- transport_error -----------------------------------------------------------------------------

TIMEOUTS = Timeouts(connect=3.0, read=45.0)


@pytest.mark.parametrize(
    "text",
    [
        "[Errno -2] Name or service not known",
        "[Errno -3] Temporary failure in name resolution",
        "[Errno 8] nodename nor servname provided, or not known",
        "[Errno 11001] getaddrinfo failed",
    ],
)
def test_dns_failure(text: str) -> None:
    err = transport_error(httpx.ConnectError(text), URL, TIMEOUTS)
    assert type(err) is ConnectionFailed
    assert err.message == (
        "Cannot find the server 'models.example.test' (DNS lookup failed). "
        "Check the spelling of the endpoint URL."
    )
    assert err.detail == f"ConnectError: {text}"


def test_connection_refused() -> None:
    err = transport_error(httpx.ConnectError("[Errno 111] Connection refused"), URL, TIMEOUTS)
    assert type(err) is ConnectionFailed
    assert err.message.startswith("Nothing is listening at models.example.test:8080 ")
    assert "(connection refused)" in err.message
    assert "Is the model server running" in err.message


@pytest.mark.parametrize(
    "text",
    [
        "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)",
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate",
    ],
)
def test_tls_failure(text: str) -> None:
    err = transport_error(httpx.ConnectError(text), URL, TIMEOUTS)
    assert type(err) is ConnectionFailed
    assert "The secure connection to models.example.test:8080 failed (TLS)" in err.message
    assert "(http or https)" in err.message


def test_other_connect_errors_keep_the_cause() -> None:
    err = transport_error(httpx.ConnectError("[Errno 113] No route to host"), URL, TIMEOUTS)
    assert type(err) is ConnectionFailed
    assert err.message == "Cannot connect to models.example.test:8080: [Errno 113] No route to host"


def test_connect_timeout_names_the_limit() -> None:
    err = transport_error(httpx.ConnectTimeout("timed out"), URL, TIMEOUTS)
    assert type(err) is RequestTimedOut
    assert err.message.startswith("Could not connect to models.example.test:8080 within 3 s.")


def test_read_timeout_names_the_limit() -> None:
    err = transport_error(httpx.ReadTimeout("timed out"), URL, TIMEOUTS)
    assert type(err) is RequestTimedOut
    assert err.message.startswith("The endpoint stopped answering for 45 s.")
    assert "raise the read timeout" in err.message


@pytest.mark.parametrize("exc", [httpx.WriteTimeout("w"), httpx.PoolTimeout("p")])
def test_other_timeouts(exc: httpx.TimeoutException) -> None:
    err = transport_error(exc, URL, TIMEOUTS)
    assert type(err) is RequestTimedOut
    assert err.message == "The request to models.example.test:8080 timed out."


def test_peer_closing_mid_body_is_an_interrupted_stream() -> None:
    exc = httpx.RemoteProtocolError("peer closed connection without sending complete message body")
    err = transport_error(exc, URL, TIMEOUTS)
    assert type(err) is StreamInterrupted
    assert err.message == "The server closed the connection before the reply was complete."


def test_url_without_port_names_only_the_host() -> None:
    err = transport_error(
        httpx.ConnectError("[Errno 111] Connection refused"),
        "https://api.example.test/v1",
        TIMEOUTS,
    )
    assert "Nothing is listening at api.example.test (connection refused)" in err.message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/generate_stream", "http://127.0.0.1:9/api/score", ""]
)
def test_404_off_openai_routes_does_not_ask_about_v1(url: str) -> None:
    err = status_error(404, "Not Found", url=url)
    assert "does it need /v1?" not in err.message
    assert "Check the endpoint URL and the model name." in err.message
