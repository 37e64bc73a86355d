"""With an admin password, a browser sees only the sign-in, whatever page it asks for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import running_app, wait_idle

PASSWORD = "e2e-admin-password"


@pytest.fixture(scope="module")
def locked_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home: Path = tmp_path_factory.mktemp("locked-home")
    with running_app(home, PLUGBOARD_ADMIN_PASSWORD=PASSWORD) as url:
        yield url


def test_no_page_without_signing_in(page: Page, locked_url: str, shoot):
    page.goto(locked_url)
    wait_idle(page)
    for path in ("/models", "/providers", "/sandbox"):
        page.goto(locked_url + path)
        wait_idle(page)
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        expect(page.get_by_text("Gemma 3 270M (local)")).to_have_count(0)
        expect(page.get_by_test_id("stChatInput")).to_have_count(0)
    shoot("sign-in")

    page.get_by_role("textbox", name="Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    wait_idle(page)
    expect(page.get_by_text("That password is not right.")).to_be_visible()
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    wait_idle(page)
    expect(page.get_by_text("Gemma 3 270M (local)", exact=True)).to_be_visible()
    shoot("signed-in")
