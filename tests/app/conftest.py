"""AppTest fixtures: the real app.py on a temporary PLUGBOARD_HOME, with small finders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


class App:
    """An AppTest with finders by label, so tests read like what a person does."""

    def __init__(self, at: AppTest) -> None:
        self.at = at

    def run(self) -> App:
        self.at.run(timeout=TIMEOUT)
        self.assert_no_exception()
        return self

    def go(self, page: str) -> App:
        self.at.switch_page(f"pages/{page}.py")
        return self.run()

    def assert_no_exception(self) -> None:
        assert not self.at.exception, [e.value for e in self.at.exception]

    # --- finders ---------------------------------------------------------------------------

    @staticmethod
    def _one(widgets: Any, label: str, kind: str) -> Any:
        matches = [w for w in widgets if w.label == label]
        assert matches, f"no {kind} labelled {label!r}; have {[w.label for w in widgets]}"
        return matches[0]

    def button(self, label: str) -> Any:
        return self._one(self.at.button, label, "button")

    def click(self, label: str) -> App:
        self.button(label).click()
        return self.run()

    def text_input(self, label: str) -> Any:
        return self._one(self.at.text_input, label, "text input")

    def type(self, label: str, value: str) -> App:
        self.text_input(label).set_value(value)
        return self

    def selectbox(self, label: str) -> Any:
        return self._one(self.at.selectbox, label, "selectbox")

    def menu(self, card_id: int, option: str) -> App:
        self.at.menu_button(key=f"card_menu_{card_id}").click(option)
        return self.run()

    def chat(self, prompt: str) -> App:
        self.at.chat_input[0].set_value(prompt)
        return self.run()

    # --- what is on screen -----------------------------------------------------------------

    def texts(self, kind: str) -> list[str]:
        return [str(e.value) for e in getattr(self.at, kind)]

    @property
    def errors(self) -> list[str]:
        return self.texts("error")

    @property
    def toasts(self) -> list[str]:
        return self.texts("toast")

    def everything(self) -> str:
        """All visible text of common elements, for 'is it on screen' checks."""
        parts: list[str] = []
        for kind in (
            "markdown",
            "caption",
            "error",
            "warning",
            "info",
            "success",
            "code",
            "title",
            "subheader",
            "toast",
        ):
            parts += self.texts(kind)
        for message in self.at.chat_message:
            parts += [str(m.value) for m in message.markdown]
        return "\n".join(parts)


@pytest.fixture(autouse=True)
def _fresh_streamlit_caches() -> Iterator[None]:
    """st.cache_resource is process-wide: every test gets its own Workspace."""
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "plugboard-home"
    monkeypatch.setenv("PLUGBOARD_HOME", str(path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("PLUGBOARD_SECRET_KEY", raising=False)
    monkeypatch.setenv("PLUGBOARD_MAX_RETRY_WAIT", "1")
    return path


@pytest.fixture
def app(home: Path) -> App:
    """The app at its default page (Models), freshly started."""
    return App(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)).run()


@pytest.fixture
def ws(app: App) -> Workspace:
    """The app's own Workspace (same database), to arrange data and check results."""
    from ui.deps import workspace

    return workspace()
