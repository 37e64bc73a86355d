"""Egress rules: allow- and deny-lists of host names and networks."""

from __future__ import annotations

import pytest

from core.egress import EgressPolicy
from core.settings import load_settings


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam",
        "http://169.254.170.2/v2/credentials",
        "http://[fe80::1]:8080/v1",
        "http://[fd00:ec2::254]/latest",
        "http://100.100.100.200/latest/meta-data",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://METADATA.google.internal/",
    ],
)
def test_shared_servers_refuse_metadata_and_link_local(url):
    problem = EgressPolicy.build(shared=True).check_url(url)
    assert problem and "not allowed on this Plugboard" in problem


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/v1", "https://api.openai.com/v1", "http://10.0.0.5/v1"]
)
def test_shared_servers_still_reach_ordinary_hosts(url):
    assert EgressPolicy.build(shared=True).check_url(url, resolve=False) is None


def test_a_single_user_install_has_no_rules():
    policy = EgressPolicy.build()
    assert not policy.active
    assert policy.check_url("http://169.254.169.254/") is None


def test_deny_list_of_names_and_networks():
    policy = EgressPolicy.build(deny=["*.internal.example", "10.0.0.0/8"])
    assert "blocked name *.internal.example" in policy.check_url("https://llm.internal.example/v1")
    assert "10.1.2.3 is in the blocked network 10.0.0.0/8" in policy.check_url(
        "http://10.1.2.3:8000/v1"
    )
    assert policy.check_url("http://11.0.0.1/v1") is None


def test_allow_list_lets_only_its_hosts_through():
    policy = EgressPolicy.build(allow=["*.together.xyz", "127.0.0.0/8"])
    assert policy.check_url("https://api.together.xyz/v1") is None
    assert policy.check_url("http://127.0.0.1:9999/v1") is None
    assert "not on this server's allow-list" in policy.check_url(
        "https://api.openai.com/v1", resolve=False
    )


def test_deny_wins_over_allow():
    policy = EgressPolicy.build(allow=["169.254.0.0/16"], shared=True)
    assert policy.check_url("http://169.254.169.254/") is not None


def test_settings_from_the_environment(tmp_path):
    settings = load_settings(
        {
            "PLUGBOARD_HOME": str(tmp_path),
            "PLUGBOARD_ALLOWED_HOSTS": "api.together.xyz, 127.0.0.0/8",
            "PLUGBOARD_DENIED_HOSTS": "10.0.0.0/8;bad.example",
        }
    )
    assert settings.allowed_hosts == ("api.together.xyz", " 127.0.0.0/8")
    assert settings.egress.check_url("http://bad.example/") is not None
    assert not settings.shared
    shared = load_settings(
        {"PLUGBOARD_HOME": str(tmp_path), "PLUGBOARD_ADMIN_PASSWORD": "hunter2-admin"}
    )
    assert shared.shared and "hunter2-admin" not in repr(shared)
    assert shared.secret_keys[0] not in repr(shared)
    assert load_settings({"PLUGBOARD_HOME": str(tmp_path), "PLUGBOARD_SHARED": "yes"}).shared
