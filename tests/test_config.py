"""Configuration picks safe defaults and fails loudly where guessing would be dangerous."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from app import create_app
from app.config import (
    BACKGROUND_THREADS,
    DEFAULT_COMMAND_THREADS,
    DEFAULT_THREADS,
    Config,
    ProductionConfig,
    config_from_env,
    development_secret_key,
    fit_engine_options,
    normalize_database_url,
)
from app.config import TestConfig as ConfigForTests  # a Test* name would be collected
from app.extensions import db
from app.models import User
from app.startup import DemoAccountsExposed, binds_to_loopback, refuse_exposed_demo_accounts


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
    monkeypatch.setenv("TRUSTED_HOSTS", "tidings.example.com")
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(ProductionConfig)


def test_production_without_trusted_hosts_refuses_to_start(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "s" * 32)
    monkeypatch.delenv("TRUSTED_HOSTS", raising=False)
    with pytest.raises(RuntimeError, match="TRUSTED_HOSTS"):
        create_app(ProductionConfig)


def test_production_cookies_are_secure_and_there_are_no_demo_accounts(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "s" * 32)
    monkeypatch.setenv("TRUSTED_HOSTS", "tidings.example.com")
    config = ProductionConfig()
    assert config.SESSION_COOKIE_SECURE and config.REMEMBER_COOKIE_SECURE
    assert not config.DEMO_ACCOUNTS


@pytest.fixture
def production_app(monkeypatch, tmp_path):
    monkeypatch.setenv("SECRET_KEY", "s" * 32)
    monkeypatch.setenv("TRUSTED_HOSTS", "tidings.example.com, www.tidings.example.com")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'prod.db'}")
    app = create_app(ProductionConfig)
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_production_answers_only_to_its_own_host_names(production_app):
    client = production_app.test_client()
    assert client.get("/auth/login", headers={"Host": "tidings.example.com"}).status_code == 200
    assert client.get("/auth/login", headers={"Host": "www.tidings.example.com"}).status_code == 200
    # A forged Host would end up in absolute links, such as the password reset mail's.
    refused = client.get("/auth/login", headers={"Host": "evil.example"})
    assert refused.status_code == 400


def test_production_tells_browsers_to_use_https_only(production_app):
    response = production_app.test_client().get(
        "/auth/login", headers={"Host": "tidings.example.com"})
    assert response.headers["Strict-Transport-Security"] == (
        "max-age=63072000; includeSubDomains")


def test_development_sends_no_hsts(client):
    assert "Strict-Transport-Security" not in client.get("/auth/login").headers


@pytest.mark.parametrize(("threads", "command_threads"), [(None, None), ("4", "2"), ("64", "16")])
def test_the_connection_pool_fits_every_thread_that_can_use_it(monkeypatch, threads,
                                                               command_threads):
    for name, value in (("TIDINGS_THREADS", threads),
                        ("REALTIME_COMMAND_THREADS", command_threads)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    options = Config().SQLALCHEMY_ENGINE_OPTIONS
    holders = int(threads or DEFAULT_THREADS) + int(command_threads or DEFAULT_COMMAND_THREADS)
    assert options["pool_size"] >= holders
    assert options["pool_size"] + options["max_overflow"] >= 2 * holders
    assert options["pool_pre_ping"] is True


def test_no_level_of_concurrency_exhausts_the_pool(monkeypatch, tmp_path):
    """Every thread a worker has (pages, realtime commands, background) takes a connection and,
    at the worst moment, a second one, all at once: nobody waits for the pool."""
    monkeypatch.setenv("TIDINGS_THREADS", "12")
    monkeypatch.setenv("REALTIME_COMMAND_THREADS", "4")
    config = ConfigForTests(database_uri=f"sqlite:///{tmp_path / 'pool.db'}")
    config.SQLALCHEMY_ENGINE_OPTIONS = {**config.SQLALCHEMY_ENGINE_OPTIONS, "pool_timeout": 2}
    app = create_app(config)
    holders = 12 + 4 + BACKGROUND_THREADS
    everyone = threading.Barrier(holders)
    errors: list[BaseException] = []

    def hold_two():
        try:
            with app.app_context():
                engine = db.engine
                with engine.connect() as first:
                    first.exec_driver_sql("SELECT 1")
                    with engine.connect() as second:
                        second.exec_driver_sql("SELECT 1")
                        everyone.wait(timeout=30)  # all of them hold two connections now
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=hold_two) for _ in range(holders)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors, errors[:3]
    with app.app_context():
        db.engine.dispose()


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


@pytest.mark.parametrize(("url", "private"), [
    ("http://127.0.0.1:8000", True), ("http://127.0.0.2:8000", True), ("http://[::1]:8000", True),
    ("http://localhost:8000", True), ("http://0.0.0.0:8000", False), ("http://[::]:8000", False),
    ("http://192.0.2.10:8000", False), ("http://unix:/run/tidings.sock", False),
])
def test_only_loopback_binds_count_as_private(url, private):
    assert binds_to_loopback(url) is private


def test_demo_accounts_are_refused_on_a_site_others_can_reach(app):
    app.config["DEMO_ACCOUNTS"] = True
    refuse_exposed_demo_accounts(app, "http://127.0.0.1:8000")  # development on loopback: fine
    with pytest.raises(DemoAccountsExposed, match="TIDINGS_DEMO_ACCOUNTS=0"):
        refuse_exposed_demo_accounts(app, "http://0.0.0.0:8000")
    app.config["TRUSTED_PROXY_HOPS"] = 1  # loopback, but nginx serves it to the world
    with pytest.raises(DemoAccountsExposed, match="behind a proxy"):
        refuse_exposed_demo_accounts(app, "http://127.0.0.1:8000")


def test_a_public_site_refuses_to_start_while_a_demo_password_still_works(app):
    app.config["DEMO_ACCOUNTS"] = False
    with app.app_context():
        admin = User(username="admin", role="admin")
        admin.set_password("admin-demo-pass")  # as the README publishes it
        db.session.add(admin)
        db.session.commit()
    with pytest.raises(DemoAccountsExposed, match="admin still have their published passwords"):
        refuse_exposed_demo_accounts(app, "http://0.0.0.0:8000")
    with app.app_context():
        db.session.scalar(select(User).where(User.username == "admin")).set_password(
            "a-real-secret-now")
        db.session.commit()
    refuse_exposed_demo_accounts(app, "http://0.0.0.0:8000")


def test_create_user_takes_an_email_for_password_resets(app, runner):
    result = runner.invoke(args=["create-user", "frank", "--password", "frank-password-1",
                                 "--email", "frank@example.org"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(select(User.email).where(User.username == "frank")) == \
            "frank@example.org"


@pytest.mark.parametrize(("uri", "pinged"), [
    ("postgresql+psycopg://tidings@localhost/tidings", True),
    ("sqlite:////srv/tidings/tidings.db", False),
    ("sqlite://", False),
])
def test_only_a_database_server_is_pinged_before_each_checkout(uri, pinged):
    """A server may restart under a pooled connection; a SQLite file has none to lose."""
    options = fit_engine_options(uri, Config().SQLALCHEMY_ENGINE_OPTIONS)
    assert options.get("pool_pre_ping", False) is pinged
