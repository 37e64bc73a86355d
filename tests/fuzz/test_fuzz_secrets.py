"""core/secrets.py: mask shows at most a short prefix and suffix, never the whole secret;
scrub leaves no occurrence of any secret it knows of.
"""

from __future__ import annotations

import string

from hypothesis import example, given
from hypothesis import strategies as st

from core.secrets import mask, remember, scrub
from tests.fuzz.strategies import api_keys, budget, known_secrets, odd_text, secrets_


@budget(1000)
@given(st.one_of(st.none(), odd_text, secrets_, api_keys))
def test_mask_shows_at_most_three_leading_and_four_trailing_characters(secret: str | None) -> None:
    shown = mask(secret)
    if not secret:
        assert shown == ""
    elif len(secret) < 12:
        assert shown == "••••••••"
    else:
        assert shown in (f"{secret[:3]}…{secret[-4:]}", f"…{secret[-4:]}")
        assert secret not in shown and len(shown) <= 8


@st.composite
def texts_with(draw: st.DrawFn, found: list[str]) -> str:
    """Text with the secrets in it, several times, glued to each other and to noise."""
    pieces = draw(st.lists(st.one_of(st.sampled_from(found), odd_text), max_size=8))
    return "".join([*pieces, draw(st.sampled_from(found))])


key_like = st.one_of(api_keys, st.text(alphabet=string.ascii_letters + "-_", min_size=4))


@budget(400)
@given(st.lists(key_like, min_size=1, max_size=4), st.data())
@example(["abcd", "abcdabcdabcd"], None)
def test_scrub_removes_every_occurrence_of_every_secret(
    found: list[str], data: st.DataObject | None
) -> None:
    text = data.draw(texts_with(found)) if data else "abcdabcdabcdabcd"
    cleaned = scrub(text, found)
    for secret in found:
        assert secret not in cleaned, (secret, cleaned)


@budget(200)
@given(st.lists(key_like, min_size=1, max_size=3), st.data())
def test_scrub_removes_remembered_secrets(found: list[str], data: st.DataObject) -> None:
    text = data.draw(texts_with(found))
    with known_secrets():
        for secret in found:
            remember(secret)
        cleaned = scrub(text)
    for secret in found:
        assert secret not in cleaned
