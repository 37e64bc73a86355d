"""Fixtures shared by every test layer: test servers on 127.0.0.1, workspaces on SQLite and
on a throwaway PostgreSQL, and llama.cpp's own OpenAI-compatible server.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from core.settings import Settings, load_settings
from core.workspace import Workspace
from tests.servers.openai_server import OpenAITestServer

ROOT = Path(__file__).resolve().parent.parent
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    url: str, timeout: float = 60.0, ok: Callable[[httpx.Response], bool] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if ok(response) if ok else response.status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout}s ({last})")


# --- OpenAI-compatible test server ------------------------------------------------------------


@pytest.fixture(scope="session")
def _openai_server() -> Iterator[OpenAITestServer]:
    server = OpenAITestServer().start()
    yield server
    server.stop()


@pytest.fixture
def openai_server(_openai_server: OpenAITestServer) -> Iterator[OpenAITestServer]:
    """The session's server, reset to a clean state for each test."""
    _openai_server.reset()
    yield _openai_server
    _openai_server.reset()


# --- workspaces -------------------------------------------------------------------------------


def make_settings(home: Path, database_url: str | None = None, **env: str) -> Settings:
    values = {"PLUGBOARD_HOME": str(home), "PLUGBOARD_MAX_RETRY_WAIT": "2", **env}
    if database_url:
        values["DATABASE_URL"] = database_url
    return load_settings(values)


@pytest.fixture
def make_workspace(tmp_path: Path) -> Iterator[Callable[..., Workspace]]:
    opened: list[Workspace] = []
    counter = itertools.count()

    def factory(database_url: str | None = None, *, seed: bool = True, **env: str) -> Workspace:
        home = tmp_path / f"home{next(counter)}"
        ws = Workspace.open(make_settings(home, database_url, **env), seed_defaults=seed)
        opened.append(ws)
        return ws

    yield factory
    for ws in opened:
        ws.close()


@pytest.fixture
def workspace(make_workspace: Callable[..., Workspace]) -> Workspace:
    """A fresh SQLite-backed workspace with the first-run defaults."""
    return make_workspace()


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_bin(name: str) -> str | None:
    for directory in PG_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    return shutil.which(name)


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server tools as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A throwaway PostgreSQL on a free port; yields the server URL without a database name."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.fail(
            "PostgreSQL server binaries are missing: apt-get install postgresql (.ci/run does)"
        )
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    data = Path(tempfile.mkdtemp(prefix="plugboard-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres([initdb, "-D", str(data), "-U", "plugboard", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres(
            [pg_ctl, "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://plugboard@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )


_pg_counter = itertools.count()


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A fresh, empty database on the throwaway server for this test."""
    import psycopg

    name = f"t{os.getpid()}_{next(_pg_counter)}"
    with psycopg.connect(
        pg_server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{pg_server}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'param.db'}"
    return str(request.getfixturevalue("pg_url"))


# --- llama.cpp's own OpenAI-compatible server -------------------------------------------------


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    from core.inference.local_gguf import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def llama_server(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` serving the bundled Gemma; yields its base URL (with /v1)."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(bundled_model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--model_alias",
                "gemma-3-270m",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            f"http://127.0.0.1:{port}/v1/models", timeout=90, ok=lambda r: r.status_code == 200
        )
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
