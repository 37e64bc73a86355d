"""core/secrets.py: encryption at rest, key rotation, masking for display, scrubbing of text."""

from __future__ import annotations

import base64
import secrets as pysecrets
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from core.secrets import SecretBox, SecretKeyMismatch, mask, remember, scrub
from core.settings import load_settings, new_secret_key

API_KEY = "sk-proj-Plugboard0123456789a1b2"


def test_round_trip() -> None:
    box = SecretBox([new_secret_key()])
    token = box.encrypt(API_KEY)
    assert box.decrypt(token) == API_KEY


def test_the_token_is_not_the_plaintext() -> None:
    box = SecretBox([new_secret_key()])
    token = box.encrypt(API_KEY)
    assert API_KEY not in token
    assert API_KEY.encode() not in base64.urlsafe_b64decode(token)
    # Fernet uses a fresh IV every time: the same key never gives the same token twice.
    assert box.encrypt(API_KEY) != token


def test_unicode_and_long_secrets_survive() -> None:
    box = SecretBox([new_secret_key()])
    for secret in ("ключ-🔑-clé", "x" * 10_000, "a b\tc"):
        assert box.decrypt(box.encrypt(secret)) == secret


def test_a_box_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SecretBox([])


def test_a_passphrase_works_as_a_key() -> None:
    passphrase = "correct horse battery staple"
    token = SecretBox([passphrase]).encrypt(API_KEY)
    assert API_KEY not in token
    assert SecretBox([passphrase]).decrypt(token) == API_KEY  # derived the same way each time
    with pytest.raises(SecretKeyMismatch):
        SecretBox(["another passphrase"]).decrypt(token)


def test_a_passphrase_and_the_fernet_key_it_looks_like_are_different_keys() -> None:
    fernet_key = new_secret_key()
    token = SecretBox([fernet_key]).encrypt(API_KEY)
    with pytest.raises(SecretKeyMismatch):
        SecretBox([fernet_key[:-2]]).decrypt(token)  # not a Fernet key: a passphrase


def test_wrong_key_raises_secret_key_mismatch_with_a_way_out() -> None:
    token = SecretBox([new_secret_key()]).encrypt(API_KEY)
    with pytest.raises(SecretKeyMismatch) as caught:
        SecretBox([new_secret_key()]).decrypt(token)
    message = str(caught.value)
    assert "PLUGBOARD_SECRET_KEY changed" in message
    assert "PLUGBOARD_OLD_SECRET_KEYS" in message
    assert "enter the API key again in Edit" in message
    assert API_KEY not in message and token not in message


def test_garbage_token_is_a_mismatch_not_a_crash() -> None:
    with pytest.raises(SecretKeyMismatch):
        SecretBox([new_secret_key()]).decrypt("not-a-fernet-token")


def test_old_keys_still_decrypt_and_rotate_moves_to_the_current_key() -> None:
    old, current = new_secret_key(), new_secret_key()
    token = SecretBox([old]).encrypt(API_KEY)
    rotating = SecretBox([current, old])
    assert rotating.decrypt(token) == API_KEY
    rotated = rotating.rotate(token)
    assert rotated != token and API_KEY not in rotated
    assert SecretBox([current]).decrypt(rotated) == API_KEY  # the old key is no longer needed
    with pytest.raises(SecretKeyMismatch):
        SecretBox([old]).decrypt(rotated)
    # New secrets are encrypted with the first (current) key.
    assert SecretBox([current]).decrypt(rotating.encrypt("fresh-secret")) == "fresh-secret"


def test_rotation_through_settings(tmp_path: Path) -> None:
    old, current = new_secret_key(), new_secret_key()
    token = SecretBox([old]).encrypt(API_KEY)
    settings = load_settings(
        {
            "PLUGBOARD_HOME": str(tmp_path),
            "PLUGBOARD_SECRET_KEY": current,
            "PLUGBOARD_OLD_SECRET_KEYS": f" {new_secret_key()} , {old} ,",
        }
    )
    assert settings.secret_keys[0] == current and len(settings.secret_keys) == 3
    box = SecretBox(settings.secret_keys)
    assert box.decrypt(token) == API_KEY
    assert SecretBox([current]).decrypt(box.rotate(token)) == API_KEY


def test_rotate_with_no_matching_key_raises() -> None:
    token = SecretBox([new_secret_key()]).encrypt(API_KEY)
    with pytest.raises(SecretKeyMismatch, match="none of the configured keys"):
        SecretBox([new_secret_key()]).rotate(token)


def test_keygen_key_is_a_valid_fernet_key() -> None:
    key = new_secret_key()
    Fernet(key.encode())  # raises if not
    assert key != new_secret_key()


# --- mask -------------------------------------------------------------------------------------


def test_mask_shows_the_prefix_and_the_last_four() -> None:
    assert mask("sk-abcdef0123456789a1b2") == "sk-…a1b2"
    assert mask(API_KEY) == "sk-…a1b2"


def test_mask_hides_short_secrets_completely() -> None:
    for secret in ("abc", "hunter2", "12345678901"):
        masked = mask(secret)
        assert masked == "••••••••"
        assert not any(ch in masked for ch in secret)


def test_mask_of_nothing_is_empty() -> None:
    assert mask(None) == "" and mask("") == ""


def test_mask_never_contains_the_middle_of_the_secret() -> None:
    secret = "tok_" + pysecrets.token_hex(16)
    masked = mask(secret)
    assert secret[3:-4] not in masked and len(masked) < len(secret) // 2


def test_mask_does_not_show_a_non_ascii_head() -> None:
    assert mask("ключ-секрет-12345678") == "…5678"


# --- scrub ------------------------------------------------------------------------------------


def test_scrub_replaces_extra_secrets_with_their_mask() -> None:
    secret = "sk-" + pysecrets.token_hex(12) + "zz99"
    text = f"request failed with Authorization: Bearer {secret} (twice: {secret})"
    cleaned = scrub(text, [secret])
    assert secret not in cleaned
    assert cleaned.count("sk-…zz99") == 2
    assert cleaned.startswith("request failed with Authorization: Bearer ")


def test_scrub_replaces_secrets_this_process_decrypted() -> None:
    secret = "sk-remembered-" + pysecrets.token_hex(8)
    box = SecretBox([new_secret_key()])
    token = box.encrypt(secret)
    assert scrub(f"before {secret}") == f"before {secret}"  # not known yet
    box.decrypt(token)
    assert secret not in scrub(f"the key was {secret}.")


def test_scrub_replaces_remembered_secrets() -> None:
    secret = "remembered-" + pysecrets.token_hex(8)
    assert scrub(secret) == secret
    remember(secret)
    assert scrub(f"<{secret}>") == f"<{mask(secret)}>"


def test_scrub_handles_a_secret_inside_a_longer_one() -> None:
    short = "abcd" + pysecrets.token_hex(4)
    long = short + "EXTRA" + pysecrets.token_hex(6)
    cleaned = scrub(f"{long} and {short}", [short, long])
    assert short not in cleaned and long not in cleaned


def test_scrub_ignores_tiny_and_empty_values() -> None:
    text = "a normal sentence with abc in it"
    assert scrub(text, ["abc", "", None, "a"]) == text


def test_scrub_leaves_text_without_secrets_alone() -> None:
    assert scrub("nothing to see", ["sk-not-present-123456"]) == "nothing to see"
