"""Settings read from the environment, with defaults that work offline on first run.

Everything here is plain data: pages and the CLI call `load_settings()` once and pass the
result down, so tests can point a whole app at a temporary folder with two env vars.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet

from core.egress import EgressPolicy, parse_list

SECRET_KEY_FILE = "secret.key"
DATABASE_FILE = "plugboard.db"
LOG_FILE = "plugboard.log"
TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `read` is the longest silence allowed between two chunks of a reply."""

    connect: float = 5.0
    read: float = 60.0
    write: float = 30.0
    pool: float = 5.0


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    secret_keys: tuple[str, ...] = field(repr=False)  # the first encrypts; all decrypt
    timeouts: Timeouts
    max_retries: int = 2
    max_retry_wait: float = 30.0  # a Retry-After longer than this is reported, not waited for
    admin_password: str = field(default="", repr=False)  # empty: no password gate
    shared: bool = False  # a server others reach: access control on, stricter egress defaults
    allowed_hosts: tuple[str, ...] = ()
    denied_hosts: tuple[str, ...] = ()

    @property
    def egress(self) -> EgressPolicy:
        return EgressPolicy.build(
            allow=self.allowed_hosts, deny=self.denied_hosts, shared=self.shared
        )

    @property
    def log_path(self) -> Path:
        return self.home / LOG_FILE


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not math.isfinite(value):  # "nan" and "inf" parse, and then no request can be sent
        raise ValueError(f"{name} must be a finite number of seconds, got {raw!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def default_home() -> Path:
    return Path.home() / ".plugboard"


def normalise_database_url(url: str) -> str:
    """Accept the URL shapes people paste (Heroku-style `postgres://`) and pick psycopg 3."""
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _write_private(path: Path, text: str) -> None:
    """Create `path` readable by its owner only, without a window where it is world-readable,
    and complete or not at all: another process never reads it half-written (empty).
    Raises FileExistsError if `path` already exists."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)  # left over by a process that was killed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        try:
            os.link(tmp, path)  # atomic, and never replaces an existing file
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: create it in place
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
    finally:
        tmp.unlink(missing_ok=True)


def _secret_key(home: Path, env: Mapping[str, str]) -> str:
    given = env.get("PLUGBOARD_SECRET_KEY", "").strip()
    if given:
        return given
    path = home / SECRET_KEY_FILE
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process won the race: use its key
            _write_private(path, Fernet.generate_key().decode())
    key = path.read_text().strip()
    if not key:
        raise ValueError(
            f"{path} is empty. Restore the key it held (or set PLUGBOARD_SECRET_KEY); deleting "
            "the file makes a new key, and stored API keys must then be entered again."
        )
    return key


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    home = Path(env.get("PLUGBOARD_HOME", "").strip() or default_home()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    url = env.get("DATABASE_URL", "").strip() or f"sqlite:///{home / DATABASE_FILE}"
    old_keys = [k.strip() for k in env.get("PLUGBOARD_OLD_SECRET_KEYS", "").split(",") if k.strip()]
    timeouts = Timeouts(
        connect=_float(env, "PLUGBOARD_CONNECT_TIMEOUT", Timeouts.connect),
        read=_float(env, "PLUGBOARD_READ_TIMEOUT", Timeouts.read),
    )
    retries_raw = env.get("PLUGBOARD_MAX_RETRIES", "").strip()
    password = env.get("PLUGBOARD_ADMIN_PASSWORD", "")
    return Settings(
        home=home,
        database_url=normalise_database_url(url),
        secret_keys=(_secret_key(home, env), *old_keys),
        timeouts=timeouts,
        max_retries=int(retries_raw) if retries_raw.isascii() and retries_raw.isdigit() else 2,
        max_retry_wait=_float(env, "PLUGBOARD_MAX_RETRY_WAIT", 30.0),
        admin_password=password,
        shared=bool(password) or env.get("PLUGBOARD_SHARED", "").strip().lower() in TRUE,
        allowed_hosts=tuple(parse_list(env.get("PLUGBOARD_ALLOWED_HOSTS", ""))),
        denied_hosts=tuple(parse_list(env.get("PLUGBOARD_DENIED_HOSTS", ""))),
    )


def new_secret_key() -> str:
    """A fresh key for PLUGBOARD_SECRET_KEY (what `python -m core keygen` prints)."""
    return Fernet.generate_key().decode()


__all__ = ["Settings", "Timeouts", "load_settings", "new_secret_key"]
