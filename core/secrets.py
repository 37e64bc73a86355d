"""Stored credentials: encrypted at rest with Fernet, masked on screen, scrubbed from text.

`SecretBox` is keyed by PLUGBOARD_SECRET_KEY (a Fernet key, or any passphrase, which is
stretched with scrypt). Older keys may follow the current one: they still decrypt, and
`SecretBox.rotate()` re-encrypts a token under the current key.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

_SALT = b"plugboard-secret-key-v1"


class SecretKeyMismatch(Exception):
    """A stored secret cannot be decrypted with any configured key."""


def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except ValueError:
        # Not a Fernet key: treat it as a passphrase.
        raw = hashlib.scrypt(key.encode(), salt=_SALT, n=2**14, r=8, p=1, dklen=32)
        return Fernet(base64.urlsafe_b64encode(raw))


class SecretBox:
    def __init__(self, keys: Iterable[str]) -> None:
        fernets = [_fernet(k) for k in keys]
        if not fernets:
            raise ValueError("at least one secret key is needed")
        self._box = MultiFernet(fernets)

    def encrypt(self, plaintext: str) -> str:
        return self._box.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            plaintext = self._box.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyMismatch(
                "A stored API key cannot be decrypted: PLUGBOARD_SECRET_KEY changed. "
                "Set the old key in PLUGBOARD_OLD_SECRET_KEYS, or enter the API key again in Edit."
            ) from exc
        remember(plaintext)
        return plaintext

    def rotate(self, token: str) -> str:
        try:
            return self._box.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyMismatch("A stored secret matches none of the configured keys.") from exc


def mask(secret: str | None) -> str:
    """`sk-abcdef…a1b2` becomes `sk-…a1b2`; short secrets show no characters at all."""
    if not secret:
        return ""
    if len(secret) < 12:
        return "••••••••"
    head = secret[:3] if secret[:3].isascii() else ""
    return f"{head}…{secret[-4:]}"


# Every plaintext secret this process has handled, so logs and error details can scrub them.
_known: set[str] = set()
_known_lock = threading.Lock()


def remember(secret: str | None) -> None:
    if secret and len(secret) >= 4:
        with _known_lock:
            _known.add(secret)


# A piece this long of a secret's start is masked too: error bodies and messages are cut to a
# length before they are scrubbed, and a cut can fall in the middle of a key the server echoed.
PARTIAL = 8  # the mask itself shows 7 characters (3 + 4)


def scrub(text: str, extra: Iterable[str | None] = ()) -> str:
    """Replace every known secret (and `extra` ones) in `text` with its masked form, and any
    cut-off start of one (PARTIAL characters or more) with its first three characters + '…'."""
    with _known_lock:
        candidates = set(_known)
    candidates.update(s for s in extra if s and len(s) >= 4)
    for secret in sorted(candidates, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, mask(secret))
    # Then the pieces, once every whole secret is masked (keys of one vendor share their start,
    # "sk-proj-": masking that start first would hide the rest of a key from the pass above).
    return _mask_cuts(text, candidates)


def _mask_cuts(text: str, secrets: Iterable[str]) -> str:
    """Mask every run of `text` that is the start of a secret (PARTIAL characters or more);
    where several secrets start alike, the longest run that matches one of them."""
    by_head: dict[str, list[str]] = {}
    for secret in secrets:
        if len(secret) > PARTIAL:
            by_head.setdefault(secret[:PARTIAL], []).append(secret)
    spans: list[tuple[int, int]] = []
    for head, group in by_head.items():
        found = text.find(head)
        while found != -1:
            spans.append((found, max(_matched(text, found, secret) for secret in group)))
            found = text.find(head, found + 1)
    if not spans:
        return text
    out: list[str] = []
    done = 0
    for begin, end in sorted(spans):
        if end <= done:
            continue  # inside a run masked already
        begin = max(begin, done)
        head = text[begin : begin + 3]
        out += [text[done:begin], (head if head.isascii() else "") + "…"]
        done = end
    return "".join(out) + text[done:]


def _matched(text: str, at: int, secret: str) -> int:
    """Where the run of `text` from `at` that equals the start of `secret` ends."""
    end = at
    while end < len(text) and end - at < len(secret) and text[end] == secret[end - at]:
        end += 1
    return end
