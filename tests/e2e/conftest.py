"""Browser tests: `streamlit run app.py` on a free port, driven by Playwright through Debian's
chromium (never a downloaded browser). Screenshots go to each test's output folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page

from core.workspace import Workspace
from tests.conftest import ROOT, free_port, make_settings, wait_for
from tests.servers.openai_server import OpenAITestServer

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium (.ci/run does)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


@pytest.fixture(scope="module")
def e2e_server() -> Iterator[OpenAITestServer]:
    server = OpenAITestServer(chunk_delay=0.15).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-home")


def start_app(home: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """`streamlit run app.py` on a free port, as a newcomer starts it; the process and its URL
    once it answers. Its output is appended to home/streamlit.log (restarts included)."""
    port = free_port()
    environment = {**os.environ, "PLUGBOARD_HOME": str(home), "PLUGBOARD_MAX_RETRIES": "0", **env}
    environment.pop("DATABASE_URL", None)
    with (home / "streamlit.log").open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
            ],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/_stcore/health", timeout=60, ok=lambda r: r.text == "ok")
    except BaseException:
        process.kill()
        raise
    return process, url


@contextmanager
def running_app(home: Path, **env: str) -> Iterator[str]:
    """The app for the duration of the block, then stopped gently."""
    process, url = start_app(home, **env)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def app_url(app_home: Path) -> Iterator[str]:
    with running_app(app_home) as url:
        yield url


@pytest.fixture
def app_ws(app_home: Path) -> Iterator[Workspace]:
    """The same database the app uses, to check what it saved."""
    ws = Workspace.open(make_settings(app_home), seed_defaults=False)
    yield ws
    ws.close()


def wait_idle(page: Page, timeout: float = 60_000) -> None:
    """Until the app is connected and its script has finished running."""
    page.wait_for_selector(
        "[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=timeout
    )
    page.wait_for_timeout(250)
    page.wait_for_selector(
        "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout
    )


SCREENSHOTS = ROOT / "test-results" / "screenshots"


@pytest.fixture
def shoot(page: Page, request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Save a full-page screenshot under test-results/screenshots/<test>/."""
    folder = SCREENSHOTS / request.node.name.replace("[", "-").replace("]", "")
    folder.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> None:
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    return take


@pytest.fixture
def app_page(page: Page, app_url: str) -> Page:
    """Start at / (a first deep link can flash "Page not found") and wait for the app."""
    page.goto(app_url)
    wait_idle(page)
    return page


def open_page(page: Page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    wait_idle(page)
