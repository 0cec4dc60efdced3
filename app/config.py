"""Configuration classes that read the environment, one per deployment kind."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

#: The project root; ``instance/`` lives beside ``app/`` so it is easy to find and to ignore.
BASE_DIR = Path(__file__).resolve().parent.parent

#: Where the SQLite database and the development secret key are kept.
INSTANCE_DIR = BASE_DIR / "instance"


def normalize_database_url(url: str) -> str:
    """Point PostgreSQL URLs at psycopg 3.

    Hosting platforms hand out ``postgres://`` or ``postgresql://`` URLs; SQLAlchemy would pick the
    psycopg2 driver for those, which we do not install.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def parse_setting(name: str, value: str) -> object:
    """``REALTIME_*`` values from the environment: numbers as numbers, origins as a list."""
    if name.endswith("_ORIGINS"):
        return [item.strip() for item in value.split(",") if item.strip()]
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def development_secret_key(instance_dir: Path = INSTANCE_DIR) -> str:
    """Return a secret key persisted in ``instance/secret_key``.

    A key generated per process would log everyone out on every restart and would differ between
    gunicorn workers, so sessions signed by one worker would be rejected by the next.
    """
    path = instance_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    # O_EXCL makes concurrent first starts (several workers) agree on one key: the loser re-reads.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


class Config:
    """Development defaults; every setting can be overridden from the environment."""

    TIDINGS_ENV = "development"
    SECRET_KEY = os.environ.get("SECRET_KEY")
    SQLALCHEMY_DATABASE_URI = normalize_database_url(
        os.environ.get("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'tidings.db'}"
    )
    REDIS_URL = os.environ.get("REDIS_URL")
    #: Test pooled connections before use: a database restart then costs a reconnect, not errors.
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}

    #: Demo accounts (alice, bob, admin) are created on start in development only.
    DEMO_ACCOUNTS = True

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SECURE = False

    #: Failed logins allowed per account, and per client address, inside the window below.
    LOGIN_MAX_FAILURES_PER_ACCOUNT = 5
    LOGIN_MAX_FAILURES_PER_ADDRESS = 20
    LOGIN_FAILURE_WINDOW_SECONDS = 15 * 60

    def __init__(self) -> None:
        # Read at instantiation, not import, so tests and wsgi.py see the environment of the moment.
        self.SECRET_KEY = os.environ.get("SECRET_KEY") or self.fallback_secret_key()
        url = os.environ.get("DATABASE_URL")
        if url:
            self.SQLALCHEMY_DATABASE_URI = normalize_database_url(url)
        self.REDIS_URL = os.environ.get("REDIS_URL") or self.REDIS_URL
        # The realtime layer picks its broker from the worker count (see flask_tidings/settings.py).
        self.REALTIME_WORKERS = int(os.environ.get("TIDINGS_WORKERS") or 1)
        for name, value in os.environ.items():
            if name.startswith("REALTIME_"):
                setattr(self, name, parse_setting(name, value))

    def fallback_secret_key(self) -> str:
        return development_secret_key()


class ProductionConfig(Config):
    """Secure cookies, no demo accounts, and no guessing at a secret key."""

    TIDINGS_ENV = "production"
    DEMO_ACCOUNTS = False
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True

    def fallback_secret_key(self) -> str:
        raise RuntimeError(
            "SECRET_KEY is not set. In production Tidings refuses to invent one, because sessions "
            "must survive restarts and agree across workers. Set it, e.g.: "
            "export SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
        )


class TestConfig(Config):
    """For the test suite: CSRF stays on so the CSRF tests exercise the real protection."""

    __test__ = False  # its name starts with "Test"; tell pytest it is not a test class

    TIDINGS_ENV = "testing"
    TESTING = True
    DEMO_ACCOUNTS = False
    WTF_CSRF_ENABLED = True
    SQLALCHEMY_DATABASE_URI = "sqlite://"

    def __init__(self, database_uri: str | None = None) -> None:
        super().__init__()
        # The fixture hands a tmp-path database; never fall through to DATABASE_URL by accident.
        self.SQLALCHEMY_DATABASE_URI = database_uri or "sqlite://"

    def fallback_secret_key(self) -> str:
        return "test-secret-key"


#: TIDINGS_ENV value → config class.
CONFIGS: dict[str, type[Config]] = {
    "development": Config,
    "production": ProductionConfig,
    "testing": TestConfig,
}


def config_from_env() -> type[Config]:
    """Pick the config class named by ``TIDINGS_ENV`` (default: development)."""
    name = os.environ.get("TIDINGS_ENV", "development").strip().lower()
    try:
        return CONFIGS[name]
    except KeyError:
        raise RuntimeError(
            f"TIDINGS_ENV={name!r} is not one of {', '.join(sorted(CONFIGS))}"
        ) from None
