"""Key rotation: re-encrypt every stored secret under the current PLUGBOARD_SECRET_KEY.

Run with the new key in PLUGBOARD_SECRET_KEY and the old one(s) in PLUGBOARD_OLD_SECRET_KEYS
(`python -m core rotate-keys`). Afterwards only the new key is needed. All or nothing: if one
stored secret matches none of the configured keys, nothing is changed.
"""

from __future__ import annotations

from sqlmodel import col, select

from core.secrets import SecretKeyMismatch
from core.tables import Provider
from core.workspace import Workspace


def rotate_stored_secrets(ws: Workspace) -> int:
    """Re-encrypt every stored API key under the first configured key; returns how many.

    One transaction (rows locked on PostgreSQL, the write lock taken up front on SQLite), so a
    connection edited meanwhile is neither lost nor left under the old key.
    Raises SecretKeyMismatch, naming the connections, if a key cannot be decrypted.
    """
    with ws.session() as session:
        providers = session.exec(
            select(Provider)
            .where(col(Provider.secret_token).is_not(None))
            .order_by(col(Provider.id))
            .with_for_update()
        ).all()
        unreadable: list[str] = []
        rotated = 0
        for provider in providers:
            if not provider.secret_token:
                continue
            try:
                provider.secret_token = ws.box.rotate(provider.secret_token)
            except SecretKeyMismatch:
                unreadable.append(provider.name)
            session.add(provider)
            rotated += 1
        if unreadable:  # raising rolls the whole transaction back
            names = ", ".join(repr(name) for name in unreadable)
            raise SecretKeyMismatch(
                f"The API key of {names} matches none of the configured keys "
                "(PLUGBOARD_SECRET_KEY, PLUGBOARD_OLD_SECRET_KEYS). Nothing was changed: add "
                "the key it was saved with to PLUGBOARD_OLD_SECRET_KEYS, or enter the API key "
                "again in Edit, then rotate again."
            )
        return rotated
