"""Who may see the app: an admin password, OIDC through st.login, or — said plainly in the
sidebar — anyone who can reach it.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Sequence

import streamlit as st

from core.settings import Settings

SIGNED_IN = "_access.signed_in"
log = logging.getLogger("plugboard.access")


def oidc_configured() -> bool:
    """An [auth] section in .streamlit/secrets.toml turns on OIDC sign-in (st.login)."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 — no secrets file at all raises StreamlitSecretNotFoundError
        return False


def require_access(settings: Settings, page_paths: Sequence[str] = ()) -> None:
    """Let the run go on only for someone allowed in; otherwise draw the sign-in and stop."""
    if settings.admin_password:
        _password_gate(settings.admin_password, page_paths)
    elif oidc_configured():
        _oidc_gate(page_paths)
    else:
        st.sidebar.warning(
            "**Open access.** Anyone who can reach this address can use Plugboard and the "
            "models and keys stored in it. Set `PLUGBOARD_ADMIN_PASSWORD`, or configure OIDC "
            "sign-in, to restrict it.",
            icon=":material/lock_open:",
        )


def signed_in(settings: Settings) -> bool:
    """Whether this session may see pages (always, when the app is open)."""
    if settings.admin_password:
        return bool(st.session_state.get(SIGNED_IN))
    if oidc_configured():
        return bool(st.user.get("is_logged_in", False))
    return True


def _sign_out() -> None:
    st.session_state.pop(SIGNED_IN, None)


def _gate(sign_in_page: Callable[[], None], page_paths: Sequence[str]) -> None:
    """Serve the sign-in at every address, then stop. st.navigation must still run (or
    Streamlit would list and serve the pages/ folder itself), and each real page's address
    gets the sign-in too, so a bookmarked link shows it instead of "page not found"."""

    def named(path: str) -> Callable[[], None]:
        def page() -> None:
            sign_in_page()

        page.__name__ = page.__qualname__ = f"sign_in_{path or 'home'}"
        return page

    gates = [st.Page(named(""), title="Sign in", url_path="sign-in", default=True)]
    gates += [st.Page(named(path), title="Sign in", url_path=path) for path in page_paths if path]
    st.navigation(gates, position="hidden").run()
    st.stop()


def _password_gate(password: str, page_paths: Sequence[str]) -> None:
    if st.session_state.get(SIGNED_IN):
        st.sidebar.button("Sign out", icon=":material/logout:", on_click=_sign_out, key="sign_out")
        return

    def sign_in() -> None:
        st.title("Plugboard")
        st.caption("This Plugboard is private. Sign in to continue.")
        with st.form("sign_in", border=True):
            typed = st.text_input("Password", type="password", key="sign_in.password")
            submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:")
        if submitted:
            if hmac.compare_digest(typed.encode(), password.encode()):
                st.session_state[SIGNED_IN] = True
                st.rerun()
            time.sleep(1)  # slows down guessing
            log.warning("failed sign-in")
            st.error("That password is not right.", icon=":material/error:")

    _gate(sign_in, page_paths)


def _oidc_gate(page_paths: Sequence[str]) -> None:
    if st.user.get("is_logged_in", False):
        who = st.user.get("email") or st.user.get("name") or "signed in"
        st.sidebar.caption(f"Signed in as {who}")
        st.sidebar.button("Sign out", icon=":material/logout:", on_click=st.logout, key="sign_out")
        return

    def sign_in() -> None:
        st.title("Plugboard")
        st.caption("This Plugboard is private. Sign in with your organisation's account.")
        st.button(
            "Sign in", type="primary", icon=":material/login:", on_click=st.login, key="sign_in"
        )

    _gate(sign_in, page_paths)
