"""The services a running Plugboard shares: settings, database, secret box, HTTP client.

Pages get one from `ui.deps.workspace()` (cached per process), the CLI opens its own,
tests build one on a temporary folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from core import db, seed
from core.inference.http import make_client
from core.logs import setup_logging
from core.secrets import SecretBox
from core.settings import Settings, load_settings


@dataclass
class Workspace:
    settings: Settings
    engine: Engine
    box: SecretBox
    client: httpx.Client

    @classmethod
    def open(cls, settings: Settings | None = None, *, seed_defaults: bool = True) -> Workspace:
        settings = settings or load_settings()
        setup_logging(settings.log_path)
        workspace = cls(
            settings=settings,
            engine=db.init_db(settings.database_url),
            box=SecretBox(settings.secret_keys),
            client=make_client(),
        )
        if seed_defaults:
            with workspace.session() as session:
                seed.ensure_defaults(session)
        return workspace

    @contextmanager
    def session(self) -> Iterator[Session]:
        with db.session_scope(self.engine) as session:
            yield session

    def close(self) -> None:
        self.client.close()
        self.engine.dispose()
