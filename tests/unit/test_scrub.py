"""core.secrets.scrub: whole keys are masked, and so is the start of a key cut off mid-way
(error messages and details are cut to a length before they are scrubbed)."""

from __future__ import annotations

from core.secrets import PARTIAL, mask, scrub

KEY = "sk-proj-Zq8wXv2LkT9mNcR4bY7uHs1e"
SAME_VENDOR = "sk-proj-Q7xK2mZ9pL4wN6vB8cX1zA5sD3fG0h"  # shares "sk-proj-" with KEY


def test_a_whole_key_is_masked_everywhere_it_appears() -> None:
    text = f"Bearer {KEY} was refused; {KEY} again"
    assert scrub(text, [KEY]) == f"Bearer {mask(KEY)} was refused; {mask(KEY)} again"


def test_a_key_cut_off_by_a_length_limit_is_masked_too() -> None:
    for length in range(PARTIAL, len(KEY)):
        cut = f"upstream said: token {KEY}"[: len("upstream said: token ") + length]
        assert scrub(cut + ". Try again.", [KEY]) == "upstream said: token sk-…. Try again."


def test_a_short_piece_is_left_alone() -> None:
    # Up to 7 characters: no more than the mask itself shows.
    assert scrub(f"prefix {KEY[: PARTIAL - 1]}", [KEY]) == f"prefix {KEY[: PARTIAL - 1]}"


def test_keys_of_one_vendor_do_not_hide_each_other() -> None:
    """The shared start of another key must not stop a whole key from being masked."""
    text = f"got {KEY}, expected {SAME_VENDOR[:20]}"
    assert scrub(text, [SAME_VENDOR, KEY]) == f"got {mask(KEY)}, expected sk-…"
    assert KEY[8:] not in scrub(text, [SAME_VENDOR, KEY])
    # A piece of one is masked whole, not just the start it shares with the other.
    for length in range(PARTIAL, len(KEY)):
        assert scrub(f"token {KEY[:length]}.", [SAME_VENDOR, KEY]) == "token sk-…."
        assert scrub(f"token {SAME_VENDOR[:length]}.", [KEY, SAME_VENDOR]) == "token sk-…."


def test_a_masked_key_is_left_as_it_is() -> None:
    once = scrub(f"key {KEY}", [KEY])
    assert scrub(once, [KEY]) == once
