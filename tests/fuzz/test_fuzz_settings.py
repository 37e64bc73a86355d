"""core/settings.py: load_settings with odd environment values either gives usable settings
or a ValueError that names the variable to fix.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.settings import Settings, load_settings
from tests.fuzz.strategies import budget, odd_text

NUMBERS = (
    "PLUGBOARD_CONNECT_TIMEOUT",
    "PLUGBOARD_READ_TIMEOUT",
    "PLUGBOARD_MAX_RETRY_WAIT",
    "PLUGBOARD_MAX_RETRIES",
)
OTHERS = (
    "PLUGBOARD_SECRET_KEY",
    "PLUGBOARD_OLD_SECRET_KEYS",
    "DATABASE_URL",
    "PLUGBOARD_ADMIN_PASSWORD",
    "PLUGBOARD_SHARED",
    "PLUGBOARD_ALLOWED_HOSTS",
    "PLUGBOARD_DENIED_HOSTS",
)
numberish = st.one_of(
    odd_text,
    st.floats().map(str),
    st.integers(-(10**6), 10**25).map(str),
    st.sampled_from(["", " 5 ", "nan", "inf", "-inf", "1e400", "0", "-1", "²", "٣", "1_0", "0x10"]),
)
env_values = st.fixed_dictionaries(
    {},
    optional={
        **{name: numberish for name in NUMBERS},
        **{name: odd_text for name in OTHERS},
        "PLUGBOARD_SHARED": st.sampled_from(["1", "true", "YES", " on ", "0", "", "maybe"]),
    },
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("settings-home")


@budget(300)
@given(env_values)
@example({"PLUGBOARD_MAX_RETRIES": "²"})  # isdigit() but not int(): an unnamed ValueError
@example({"PLUGBOARD_READ_TIMEOUT": "nan"})  # accepted; httpx then fails on every request
@example({"PLUGBOARD_MAX_RETRY_WAIT": "inf"})
def test_load_settings_gives_usable_settings_or_names_the_variable(
    home: Path, env: dict[str, str]
) -> None:
    env = {"PLUGBOARD_HOME": str(home), **env}
    try:
        settings = load_settings(env)
    except ValueError as exc:
        named = [name for name in env if name in str(exc)]
        assert named, str(exc)
        return
    assert isinstance(settings, Settings)
    for value in (settings.timeouts.connect, settings.timeouts.read, settings.max_retry_wait):
        assert math.isfinite(value) and value > 0
    assert isinstance(settings.max_retries, int) and settings.max_retries >= 0
    assert settings.secret_keys and all(k and k == k.strip() for k in settings.secret_keys)
    assert settings.home == home
    assert settings.egress is not None  # the host rules parse
