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


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_list(name: str) -> list[str]:
    """A comma-separated environment variable as a list (empty items dropped)."""
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value in ("1", "true", "yes", "on")


#: gunicorn.conf.py's default for ``TIDINGS_THREADS``; both read the same variable.
DEFAULT_THREADS = 32
#: flask_tidings' default for ``REALTIME_COMMAND_THREADS``.
DEFAULT_COMMAND_THREADS = 16
#: Threads besides those that may hold a database connection at once: the reactor, the sweep,
#: the broker's listener or poller, the cluster reporter.
BACKGROUND_THREADS = 4


def pool_options(threads: int, command_threads: int) -> dict[str, int]:
    """Connection pool size for one worker, derived from the threads that can use it.

    Every thread of a worker that touches the database holds at most one connection at a time
    in the normal case: gunicorn's ``threads`` (one request each), the realtime layer's
    ``command_threads`` (one client command each) and a few background threads. A pool of that
    size never makes anyone wait for a connection, whatever the load: more requests than
    threads queue in gunicorn, not in the pool. The overflow doubles it, so even a code path
    that briefly holds a second connection while its first is checked out (a publish beside the
    request's own session, say) cannot deadlock the pool when every thread does so at once.
    Connections are opened lazily, so an idle worker holds few; a PostgreSQL server needs
    ``max_connections`` of at least workers x (pool_size + max_overflow) at the worst peak.
    """
    holders = threads + command_threads + BACKGROUND_THREADS
    return {"pool_size": holders, "max_overflow": holders}


def fit_engine_options(uri: str, options: dict) -> dict:
    """The pool options that make sense for this database.

    SQLite has no server that could restart or drop a connection, so the pre-ping (a
    ``SELECT 1`` before every checkout) could never find a dead one: it only doubled the
    queries of every socket handshake and subscribe (issue 18). An in-memory SQLite database
    lives in one connection (Flask-SQLAlchemy gives it a StaticPool), which takes no pool size.
    """
    if not uri.startswith("sqlite"):
        return options
    options = {k: v for k, v in options.items() if k != "pool_pre_ping"}
    if uri in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in uri:
        return {k: v for k, v in options.items() if k not in ("pool_size", "max_overflow")}
    return options


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
    #: Pool size and overflow are added in ``__init__`` from the thread counts (pool_options).
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}

    #: Largest request body; larger ones get 413 before they are read (nginx enforces the same).
    MAX_CONTENT_LENGTH = 1024 * 1024

    #: Demo accounts (alice, bob, admin) are created on start in development only, and only when
    #: the site binds to loopback: their passwords are published in the README.
    DEMO_ACCOUNTS = True

    #: Proxies in front of the site that set X-Forwarded-For/-Proto/-Host (nginx: 1). 0 trusts no
    #: such header, so nobody can pick their own address by sending one.
    TRUSTED_PROXY_HOPS = 0
    #: Host names the site answers to (others get 400); empty accepts any (development only).
    TRUSTED_HOSTS: list[str] | None = None
    #: Seconds browsers remember to use HTTPS only (Strict-Transport-Security); 0 sends none.
    HSTS_SECONDS = 0

    #: Bearer token that shows /healthz in full to a monitor; without it only admins and direct
    #: loopback clients see more than the status.
    HEALTHZ_TOKEN: str | None = None

    #: SMTP server for password reset mail; unset in development writes the mail to the log.
    MAIL_SERVER: str | None = None
    MAIL_PORT = 25
    MAIL_USERNAME: str | None = None
    MAIL_PASSWORD: str | None = None
    MAIL_USE_TLS = False
    MAIL_FROM = "Tidings <no-reply@localhost>"
    #: Seconds a password reset link stays valid.
    PASSWORD_RESET_MAX_AGE = 60 * 60

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SECURE = False

    #: Failed logins one address may make against one account before that pair is locked for
    #: the window (the real user, elsewhere, is not); a warning comes with the last few.
    LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS = 5
    LOGIN_WARN_WHEN_ATTEMPTS_LEFT = 2
    #: Failed logins one address may make against any accounts inside the window.
    LOGIN_MAX_FAILURES_PER_ADDRESS = 20
    #: Counters are forgotten this long after their last failure.
    LOGIN_FAILURE_WINDOW_SECONDS = 15 * 60
    #: Failures of one account, from anywhere, before each further attempt must wait (1, 2, 4 ...
    #: seconds, up to the maximum): guessing slows to a crawl, the account is never locked, and a
    #: browser that has logged in to the account before is not slowed at all.
    LOGIN_ACCOUNT_SLOWDOWN_AFTER = 10
    LOGIN_ACCOUNT_MAX_DELAY_SECONDS = 60
    #: Accounts one address may register, and password reset mails it may ask for, per window.
    REGISTRATIONS_PER_ADDRESS = 5
    PASSWORD_RESETS_PER_ADDRESS = 5
    SIGNUP_WINDOW_SECONDS = 60 * 60

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
        # The same variables gunicorn.conf.py and flask_tidings read, so the pool fits the threads.
        self.SQLALCHEMY_ENGINE_OPTIONS = {
            **type(self).SQLALCHEMY_ENGINE_OPTIONS,
            **pool_options(env_int("TIDINGS_THREADS", DEFAULT_THREADS),
                           env_int("REALTIME_COMMAND_THREADS", DEFAULT_COMMAND_THREADS)),
        }
        self.DEMO_ACCOUNTS = env_flag("TIDINGS_DEMO_ACCOUNTS", self.DEMO_ACCOUNTS)
        self.TRUSTED_PROXY_HOPS = env_int("TRUSTED_PROXY_HOPS", self.TRUSTED_PROXY_HOPS)
        self.TRUSTED_HOSTS = env_list("TRUSTED_HOSTS") or self.TRUSTED_HOSTS
        self.HSTS_SECONDS = env_int("HSTS_SECONDS", self.HSTS_SECONDS)
        self.HEALTHZ_TOKEN = os.environ.get("HEALTHZ_TOKEN") or self.HEALTHZ_TOKEN
        self.MAX_CONTENT_LENGTH = env_int("MAX_CONTENT_LENGTH", self.MAX_CONTENT_LENGTH)
        self.MAIL_SERVER = os.environ.get("MAIL_SERVER") or self.MAIL_SERVER
        self.MAIL_PORT = env_int("MAIL_PORT", self.MAIL_PORT)
        self.MAIL_USERNAME = os.environ.get("MAIL_USERNAME") or self.MAIL_USERNAME
        self.MAIL_PASSWORD = os.environ.get("MAIL_PASSWORD") or self.MAIL_PASSWORD
        self.MAIL_USE_TLS = env_flag("MAIL_USE_TLS", self.MAIL_USE_TLS)
        self.MAIL_FROM = os.environ.get("MAIL_FROM") or self.MAIL_FROM

    def fallback_secret_key(self) -> str:
        return development_secret_key()


class ProductionConfig(Config):
    """Secure cookies, HSTS, no demo accounts, and no guessing at a secret key or host names."""

    TIDINGS_ENV = "production"
    DEMO_ACCOUNTS = False
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True
    #: Two years, as hstspreload.org asks; browsers then refuse plain HTTP to the site.
    HSTS_SECONDS = 2 * 365 * 24 * 3600

    def __init__(self) -> None:
        super().__init__()
        if not self.TRUSTED_HOSTS:
            # A Host header the site does not own would end up in password reset links and
            # absolute URLs; production names its hosts.
            raise RuntimeError(
                "TRUSTED_HOSTS is not set. In production Tidings answers only to the host names "
                "you list, e.g.: export TRUSTED_HOSTS=tidings.example.com"
            )

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
