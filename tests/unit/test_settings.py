"""core/settings.py: env-first settings with defaults that work offline on first run."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from core.settings import (
    DATABASE_FILE,
    LOG_FILE,
    SECRET_KEY_FILE,
    Timeouts,
    load_settings,
    normalise_database_url,
)


def test_defaults_live_in_the_home_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings({})
    home = tmp_path / ".plugboard"
    assert settings.home == home and home.is_dir()
    assert settings.database_url == f"sqlite:///{home / DATABASE_FILE}"
    assert settings.log_path == home / LOG_FILE
    assert settings.timeouts == Timeouts()
    assert settings.timeouts.connect == 5.0 and settings.timeouts.read == 60.0
    assert settings.max_retries == 2 and settings.max_retry_wait == 30.0


def test_plugboard_home_is_created(tmp_path: Path) -> None:
    home = tmp_path / "nested" / "home"
    settings = load_settings({"PLUGBOARD_HOME": str(home)})
    assert settings.home == home and home.is_dir()
    assert settings.database_url == f"sqlite:///{home / 'plugboard.db'}"


def test_a_key_file_is_generated_private_and_valid(tmp_path: Path) -> None:
    settings = load_settings({"PLUGBOARD_HOME": str(tmp_path)})
    key_file = tmp_path / SECRET_KEY_FILE
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    Fernet(key.encode())  # a real Fernet key
    assert settings.secret_keys == (key,)


def test_the_same_key_is_used_on_the_next_start(tmp_path: Path) -> None:
    first = load_settings({"PLUGBOARD_HOME": str(tmp_path)})
    second = load_settings({"PLUGBOARD_HOME": str(tmp_path)})
    assert first.secret_keys == second.secret_keys


def test_an_existing_key_file_is_kept(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    (tmp_path / SECRET_KEY_FILE).write_text(f"{key}\n")
    assert load_settings({"PLUGBOARD_HOME": str(tmp_path)}).secret_keys == (key,)
    assert (tmp_path / SECRET_KEY_FILE).read_text() == f"{key}\n"


def test_secret_key_from_the_environment_writes_no_file(tmp_path: Path) -> None:
    settings = load_settings({"PLUGBOARD_HOME": str(tmp_path), "PLUGBOARD_SECRET_KEY": " k1 "})
    assert settings.secret_keys == ("k1",)
    assert not (tmp_path / SECRET_KEY_FILE).exists()


def test_old_keys_follow_the_current_one(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "PLUGBOARD_HOME": str(tmp_path),
            "PLUGBOARD_SECRET_KEY": "current",
            "PLUGBOARD_OLD_SECRET_KEYS": "old1, old2,,",
        }
    )
    assert settings.secret_keys == ("current", "old1", "old2")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/plug", "postgresql+psycopg://u:p@db:5432/plug"),
        ("postgresql://u@db/plug", "postgresql+psycopg://u@db/plug"),
        ("postgresql+psycopg://u@db/plug", "postgresql+psycopg://u@db/plug"),
        ("sqlite:////data/p.db", "sqlite:////data/p.db"),
    ],
)
def test_database_url_is_normalised(tmp_path: Path, given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected
    settings = load_settings({"PLUGBOARD_HOME": str(tmp_path), "DATABASE_URL": f" {given} "})
    assert settings.database_url == expected


def test_blank_database_url_means_the_default(tmp_path: Path) -> None:
    settings = load_settings({"PLUGBOARD_HOME": str(tmp_path), "DATABASE_URL": "  "})
    assert settings.database_url.startswith("sqlite:///") and str(tmp_path) in settings.database_url


def test_timeouts_and_retries_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "PLUGBOARD_HOME": str(tmp_path),
            "PLUGBOARD_CONNECT_TIMEOUT": "2.5",
            "PLUGBOARD_READ_TIMEOUT": " 120 ",
            "PLUGBOARD_MAX_RETRIES": "0",
            "PLUGBOARD_MAX_RETRY_WAIT": "7",
        }
    )
    assert settings.timeouts.connect == 2.5
    assert settings.timeouts.read == 120.0
    assert settings.timeouts.write == Timeouts.write and settings.timeouts.pool == Timeouts.pool
    assert settings.max_retries == 0
    assert settings.max_retry_wait == 7.0


@pytest.mark.parametrize("name", ["PLUGBOARD_CONNECT_TIMEOUT", "PLUGBOARD_READ_TIMEOUT"])
def test_a_timeout_that_is_not_a_number_is_named_in_the_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError) as caught:
        load_settings({"PLUGBOARD_HOME": str(tmp_path), name: "ten"})
    assert str(caught.value) == f"{name} must be a number of seconds, got 'ten'"


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_timeout_must_be_positive(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match=f"PLUGBOARD_READ_TIMEOUT must be positive, got '{value}'"):
        load_settings({"PLUGBOARD_HOME": str(tmp_path), "PLUGBOARD_READ_TIMEOUT": value})


def test_settings_come_from_os_environ_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PLUGBOARD_HOME", str(tmp_path / "env-home"))
    monkeypatch.setenv("DATABASE_URL", "postgres://x@y/z")
    settings = load_settings()
    assert settings.home == tmp_path / "env-home"
    assert settings.database_url == "postgresql+psycopg://x@y/z"


def _start_at_once(home: Path, count: int) -> tuple[list[str], list[BaseException]]:
    barrier = threading.Barrier(count)
    keys: list[str] = []
    failures: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            keys.append(load_settings({"PLUGBOARD_HOME": str(home)}).secret_keys[0])
        except BaseException as exc:  # noqa: BLE001 — collected for the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return keys, failures


def test_simultaneous_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    """Several processes or threads starting at once on a new home must not each make a key,
    nor read the key file while another one is still writing it."""
    for trial in range(20):
        home = tmp_path / f"race{trial}"
        home.mkdir()
        keys, failures = _start_at_once(home, 6)
        assert failures == []
        assert len(keys) == 6 and len(set(keys)) == 1, f"trial {trial}: {len(set(keys))} keys"
        assert keys[0] == (home / SECRET_KEY_FILE).read_text().strip()
        assert sorted(p.name for p in home.iterdir()) == [SECRET_KEY_FILE]  # no leftovers


def test_an_empty_key_file_is_an_error_not_an_empty_passphrase(tmp_path: Path) -> None:
    (tmp_path / SECRET_KEY_FILE).write_text("\n")
    with pytest.raises(ValueError, match=r"secret\.key is empty"):
        load_settings({"PLUGBOARD_HOME": str(tmp_path)})
