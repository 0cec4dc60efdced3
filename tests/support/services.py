"""Private PostgreSQL and Redis servers for one test session.

``make test`` must leave the machine as it found it: no edit to the system's ``pg_hba.conf``, no
restart of a machine-wide server, no keys left in a shared Redis. So the suite runs servers of
its own: a PostgreSQL cluster initialised into a temporary directory (trust authentication in
its own ``pg_hba.conf``, a free port, its socket in that directory) and a redis-server with no
persistence on another free port. Each is started on first use and stopped when the session
ends (``pytest_sessionfinish`` in ``tests/conftest.py``, an ``atexit`` hook, and a parent-death
signal if pytest itself is killed).

Tests read the addresses as module attributes, which start the server on first access::

    from tests.support import services

    env = {"REDIS_URL": services.REDIS_URL}            # redis://127.0.0.1:<port>/0
    engine = create_engine(services.POSTGRES_URL)      # the tidings_test database (psycopg 3)
    psycopg.connect(services.POSTGRES_ADMIN_DSN)       # the postgres database, to CREATE DATABASE

``TIDINGS_TEST_REDIS_URL`` and ``TIDINGS_TEST_POSTGRES_DSN`` (a libpq URL to the ``postgres``
database of a server where ``tidings_test`` may be created) point the suite at servers of your
own instead. The binaries come from Debian's ``postgresql`` and ``redis-server`` packages, which
``scripts/test-services.sh`` installs when they are missing.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

#: The database the model tests and a few others use; created on every private server.
TEST_DATABASE = "tidings_test"

#: Seconds to wait for a server to accept connections, and for a clean stop before SIGKILL.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

#: Settings that make a throwaway cluster fast (nothing here has to survive a power cut) and
#: roomy enough for several gunicorn workers with full pools plus the tests' own engines.
POSTGRES_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "400",
    "shared_buffers": "32MB",
}


class ServiceUnavailable(RuntimeError):
    """A server the tests need could not be started (usually: its package is not installed)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent(signum: int):
    """preexec_fn: the server gets ``signum`` when pytest dies, even by SIGKILL.

    It runs after Popen's own setuid (the kernel clears the setting on a credential change).
    """

    def set_signal() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signum)

    return set_signal


#: Prefix of the temporary folders; each holds an ``owner`` file with the pid of its pytest.
DIR_PREFIX = "tidings-test-"


def _private_dir(kind: str) -> Path:
    """A fresh temporary folder, after removing those left by sessions that were killed."""
    for stale in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        try:
            owner = int((stale / "owner").read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (OSError, ValueError):
            continue  # not ours to judge: unreadable, or a live owner under another account
    root = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{kind}-"))
    (root / "owner").write_text(str(os.getpid()))
    return root


def _server_user() -> str | None:
    """initdb and postgres refuse to run as root: as root use the ``postgres`` account the
    Debian package creates (or ``nobody``); as anyone else, run as yourself."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServiceUnavailable("running as root and neither a postgres nor a nobody account exists")


def postgres_bindir() -> Path:
    """Where initdb and postgres live: Debian keeps them out of PATH, one folder per version."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if versions:
        return Path(versions[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ServiceUnavailable(
        "PostgreSQL's initdb is not installed; `make test` installs Debian's postgresql package "
        "(scripts/test-services.sh)"
    )


def _wait(ready, process: subprocess.Popen, name: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise ServiceUnavailable(
                f"{name} exited with {process.returncode}:\n{_tail(log)}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"{name} did not start in {START_TIMEOUT:.0f}s:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen | None, signum: int) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _ensure_database(admin_dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory, on a free loopback port, trusting local
    connections as ``postgres`` (its own ``pg_hba.conf``; the machine's is never read)."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.user = _server_user()
        self.root = _private_dir("pg")
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self.process: subprocess.Popen | None = None
        if self.user:
            os.chown(self.root, pwd.getpwnam(self.user).pw_uid, pwd.getpwnam(self.user).pw_gid)
        self._initdb()

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = TEST_DATABASE) -> str:
        """A SQLAlchemy URL (psycopg 3 driver) to one database of this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run_as_server_user(self, args: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(args, user=self.user, cwd=self.root, **kwargs)

    def _initdb(self) -> None:
        with self.log.open("ab") as log:
            process = self._run_as_server_user(
                [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                 "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"],
                stdout=log, stderr=subprocess.STDOUT)
            if process.wait(timeout=120) != 0:
                raise ServiceUnavailable(f"initdb failed:\n{_tail(self.log)}")

    def start(self) -> None:
        """Start the server (on a new free port the first time, the same one on a restart) and
        make sure the test database exists."""
        for attempt in range(3):
            if not self.port or attempt:
                self.port = free_port()
            args = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                    "-c", f"unix_socket_directories={self.root}"]
            for name, value in POSTGRES_SETTINGS.items():
                args += ["-c", f"{name}={value}"]
            with self.log.open("ab") as log:
                # SIGQUIT: immediate shutdown, children included, if pytest dies under us.
                self.process = self._run_as_server_user(
                    args, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent(signal.SIGQUIT))
            try:
                _wait(self._accepts, self.process, "postgres", self.log)
                break
            except ServiceUnavailable:
                if "could not bind" not in _tail(self.log) or attempt == 2:
                    raise
        self._ensure_database(TEST_DATABASE)

    def _accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.admin_dsn, connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def _ensure_database(self, name: str) -> None:
        _ensure_database(self.admin_dsn, name)

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, nothing is waited for."""
        _stop(self.process, signal.SIGINT)

    def restart(self) -> None:
        """Stop and start on the same port, as an operator's restart would: every connection
        dies."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server on a free loopback port that keeps nothing on disk."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise ServiceUnavailable(
                "redis-server is not installed; `make test` installs Debian's redis-server "
                "package (scripts/test-services.sh)")
        self.binary = binary
        self.root = _private_dir("redis")
        self.log = self.root / "redis.log"
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for attempt in range(3):
            if not self.port or attempt:
                self.port = free_port()
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", str(self.root),
                     "--daemonize", "no"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                    preexec_fn=_die_with_parent(signal.SIGTERM))
            try:
                _wait(self._accepts, self.process, "redis-server", self.log)
                return
            except ServiceUnavailable:
                if "Address already in use" not in _tail(self.log) or attempt == 2:
                    raise

    def _accepts(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


_lock = threading.Lock()
_postgres: PrivatePostgres | None = None
_redis: PrivateRedis | None = None


def postgres() -> PrivatePostgres:
    """The session's private PostgreSQL, started on first call."""
    global _postgres
    with _lock:
        if _postgres is None:
            server = PrivatePostgres()
            try:
                server.start()
            except BaseException:
                server.destroy()
                raise
            _postgres = server
        return _postgres


def redis_server() -> PrivateRedis:
    """The session's private Redis, started on first call."""
    global _redis
    with _lock:
        if _redis is None:
            server = PrivateRedis()
            try:
                server.start()
            except BaseException:
                server.destroy()
                raise
            _redis = server
        return _redis


def postgres_admin_dsn() -> str:
    return os.environ.get("TIDINGS_TEST_POSTGRES_DSN") or postgres().admin_dsn


def postgres_url(database: str = TEST_DATABASE) -> str:
    """SQLAlchemy URL of ``database`` on the test PostgreSQL server."""
    external = os.environ.get("TIDINGS_TEST_POSTGRES_DSN")
    if not external:
        return postgres().url(database)
    _ensure_database(external, database)
    base = external.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


def redis_url() -> str:
    return os.environ.get("TIDINGS_TEST_REDIS_URL") or redis_server().url


def stop_all() -> None:
    """Stop and delete every private server this process started (idempotent)."""
    global _postgres, _redis
    with _lock:
        for server in (_postgres, _redis):
            if server is not None:
                server.destroy()
        _postgres = _redis = None


atexit.register(stop_all)


def __getattr__(name: str) -> str:
    # PEP 562: the URLs are computed (and the servers started) only when a test asks for them.
    if name == "REDIS_URL":
        return redis_url()
    if name == "POSTGRES_URL":
        return postgres_url()
    if name == "POSTGRES_ADMIN_DSN":
        return postgres_admin_dsn()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- nginx

#: The production template (docs/deploy.md), filled in and run as it is.
NGINX_TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if not found:
        raise ServiceUnavailable(
            "nginx is not installed; `make test` installs Debian's nginx package "
            "(scripts/test-services.sh)")
    return found


def render_nginx_conf(values: dict[str, str], template: Path = NGINX_TEMPLATE) -> str:
    """The template with every ``@@NAME@@`` marker replaced; a marker left over is an error."""
    text = template.read_text()
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", value)
    left = sorted(set(re.findall(r"@@[A-Z_]+@@", text)))
    if left:
        raise ValueError(f"unfilled markers in {template}: {left}")
    return text


class PrivateNginx:
    """deploy/nginx.conf in front of the given upstreams, on a free loopback port, with its own
    prefix (pid, logs, temp files) in a temporary directory."""

    def __init__(self, upstreams: list[str], static_root: Path) -> None:
        self.binary = nginx_binary()
        self.root = _private_dir("nginx")
        for folder in ("logs", "temp"):
            (self.root / folder).mkdir()
        self.upstreams = upstreams
        self.static_root = static_root
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.root / "logs" / "error.log"

    def start(self) -> None:
        for attempt in range(3):
            self.port = free_port()
            config = self.root / "nginx.conf"
            config.write_text(render_nginx_conf({
                # As root, workers would drop to "nobody", who cannot write this prefix.
                "USER": "root" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name,
                "LISTEN": f"127.0.0.1:{self.port}",
                "SERVER_NAME": "127.0.0.1 localhost",
                "UPSTREAM_SERVERS": "\n        ".join(f"server {u};" for u in self.upstreams),
                "STATIC_ROOT": str(self.static_root),
            }))
            self.process = subprocess.Popen(
                [self.binary, "-p", str(self.root), "-c", str(config), "-e", str(self.error_log),
                 "-g", "daemon off;"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.root,
                preexec_fn=_die_with_parent(signal.SIGTERM))
            try:
                _wait(self._accepts, self.process, "nginx", self.error_log)
                return
            except ServiceUnavailable:
                if "Address already in use" not in _tail(self.error_log) or attempt == 2:
                    raise

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
