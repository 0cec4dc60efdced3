"""Configuration picks safe defaults and fails loudly where guessing would be dangerous."""

from __future__ import annotations

import pytest

from app import create_app
from app.config import (
    Config,
    ProductionConfig,
    config_from_env,
    development_secret_key,
    normalize_database_url,
)
from app.config import TestConfig as ConfigForTests  # a Test* name would be collected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db/x", "postgresql+psycopg://u:p@db/x"),
        ("postgresql://u:p@db/x", "postgresql+psycopg://u:p@db/x"),
        ("postgresql+psycopg://u@db/x", "postgresql+psycopg://u@db/x"),
        ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
    ],
)
def test_database_urls_are_pointed_at_psycopg(url, expected):
    assert normalize_database_url(url) == expected


def test_production_without_a_secret_key_refuses_to_start(monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(ProductionConfig)


def test_production_cookies_are_secure_and_there_are_no_demo_accounts(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "s" * 32)
    config = ProductionConfig()
    assert config.SESSION_COOKIE_SECURE and config.REMEMBER_COOKIE_SECURE
    assert not config.DEMO_ACCOUNTS


def test_development_secret_key_is_generated_once_and_kept(tmp_path):
    first = development_secret_key(tmp_path)
    assert len(first) >= 32
    assert development_secret_key(tmp_path) == first


@pytest.mark.parametrize(
    ("env", "expected"),
    [(None, Config), ("development", Config), ("production", ProductionConfig),
     ("testing", ConfigForTests)],
)
def test_tidings_env_chooses_the_config(monkeypatch, env, expected):
    if env is None:
        monkeypatch.delenv("TIDINGS_ENV", raising=False)
    else:
        monkeypatch.setenv("TIDINGS_ENV", env)
    assert config_from_env() is expected


def test_an_unknown_tidings_env_is_an_error(monkeypatch):
    monkeypatch.setenv("TIDINGS_ENV", "staging")
    with pytest.raises(RuntimeError, match="staging"):
        config_from_env()
