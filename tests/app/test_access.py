"""Access control: nobody unauthenticated sees a page; an open app says so in its sidebar."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import ROOT, TIMEOUT, App

PASSWORD = "correct horse battery staple"


@pytest.fixture
def locked(home, monkeypatch) -> App:
    monkeypatch.setenv("PLUGBOARD_ADMIN_PASSWORD", PASSWORD)
    return App(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)).run()


def test_open_app_warns_in_the_sidebar(app: App):
    warning = app.at.sidebar.warning[0].value
    assert "Open access" in warning and "PLUGBOARD_ADMIN_PASSWORD" in warning


def test_password_gate_shows_no_page_until_signed_in(locked: App):
    assert locked.texts("title") == ["Plugboard"]
    assert "Gemma 3 270M (local)" not in locked.everything()
    # While locked, no real page is even registered: every address is the sign-in.
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        locked.at.switch_page("pages/sandbox.py")


def test_wrong_password_is_refused_and_right_one_lets_in(locked: App):
    locked.type("Password", "guess").click("Sign in")
    assert locked.errors == ["That password is not right."]
    assert "Gemma 3 270M (local)" not in locked.everything()

    locked.type("Password", PASSWORD).click("Sign in")
    locked.go("models")
    assert "**Gemma 3 270M (local)**" in locked.everything()
    assert not locked.at.sidebar.warning  # not "open access" any more
    locked.go("sandbox")
    assert locked.at.chat_input  # the pages work once signed in
    locked.at.session_state["_access.signed_in"] = False  # as the Sign out button does
    locked.go("models")
    assert "Gemma 3 270M (local)" not in locked.everything()


def test_password_in_the_environment_makes_egress_strict(locked: App):
    from ui.deps import workspace

    settings = workspace().settings
    assert settings.shared
    assert "not allowed" in (settings.egress.check_url("http://169.254.169.254/latest") or "")


def test_oidc_gate_when_auth_is_configured(home):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.secrets["auth"] = {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "not-a-real-secret",
        "client_id": "plugboard",
        "client_secret": "not-a-real-secret",
        "server_metadata_url": "https://login.example.com/.well-known/openid-configuration",
    }
    app = App(at).run()
    assert [b.label for b in at.button] == ["Sign in"]
    assert "Gemma 3 270M (local)" not in app.everything()

    at.user = {"is_logged_in": True, "email": "ada@example.com"}
    app.run()
    assert "**Gemma 3 270M (local)**" in app.everything()
    assert any("ada@example.com" in c for c in app.texts("caption"))
