"""Start and stop the servers under test (real gunicorn, gthread), and read their /proc figures.

Like tests/support/live.py (whose migration and health-wait it reuses), but gunicorn starts
through ``bash -c "ulimit -n 65536; exec ..."`` so a worker can hold thousands of sockets, and
any WSGI module can be served: ``bench.server:app`` (Tidings) or ``bench.naive_app:app``. The
reference (bench/ref_server.py) is one plain process, started the same way.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from tests.support import services
from tests.support.live import (
    LIVE_SECRET_KEY,
    ROOT,
    LiveServer,
    _wait_until_healthy,
    free_port,
    migrate_database,
)

#: Guards bench/server.py's publishing endpoint; fresh per run.
TOKEN = secrets.token_hex(16)
#: Threads kept free for page requests (gunicorn.conf.py's TIDINGS_HTTP_THREADS).
HTTP_THREADS = 32
#: File descriptors each server process may open.
NOFILE = 65536  # capped at the hard limit below


class Server(LiveServer):
    kind: str = "tidings"

    @property
    def ws_url(self) -> str:
        """Where the clients open their sockets."""
        return self.url.replace("http://", "ws://") + "/ws"

    def cpu_seconds(self) -> float:
        """CPU time (user + system, every thread, live or exited) of the serving processes."""
        return _cpu_ticks(self.worker_pids()) / TICKS

    def post(self, path: str, body: dict, timeout: float = 120.0) -> dict:
        response = requests.post(self.url + path, json=body, timeout=timeout,
                                 headers={"X-Bench-Token": TOKEN})
        response.raise_for_status()
        return response.json()

    def head(self, stream: str = "broadcast") -> int:
        response = requests.get(self.url + "/bench/head", params={"stream": stream}, timeout=30,
                                headers={"X-Bench-Token": TOKEN})
        response.raise_for_status()
        return int(response.json()["head"])

    def proc_stats(self) -> dict[str, int]:
        """RSS (kB) and OS threads summed over the workers, from /proc/<pid>/status."""
        rss = threads = 0
        for pid in self.worker_pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads += int(line.split()[1])
        return {"rss_kb": rss, "threads": threads}

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the whole process group, SIGKILL it if it lingers (the baseline's stuck
        threads never finish)."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def log_problems(self) -> list[str]:
        """Lines of the gunicorn log that look like trouble (tracebacks, errors, warnings)."""
        keys = ("Traceback", "ERROR", "[CRITICAL]", "WORKER TIMEOUT", "Exception", "WARNING")
        return [line for line in self.read_log().splitlines() if any(k in line for k in keys)]


class RefServer(Server):
    """The reference is one process serving WebSockets on one port and HTTP on another."""

    ws_port: int = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    def worker_pids(self) -> list[int]:
        return [self.pid] if self.is_running() else []


#: Clock ticks per second, the unit of /proc/<pid>/stat's CPU times.
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pids: list[int]) -> int:
    """utime + stime of these processes (all their threads), in clock ticks."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def _launch(kind: str, directory: Path, python_args: str, env: dict[str, str],
            workers: int, port: int | None = None, cls: type[Server] = Server,
            host: str = "127.0.0.1", start_timeout: float = 90.0) -> Server:
    """Start ``python <python_args>`` ({bind} and {port} filled in) in its own process group."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    run_env = {**env, "TIDINGS_BIND": f"{host}:{port}"}
    log = directory / f"{kind}-{host}-{port}.log"
    command = (f"ulimit -n $(( $(ulimit -Hn) < {NOFILE} ? $(ulimit -Hn) : {NOFILE} )); "
               f"exec {shlex.quote(sys.executable)} "
               + python_args.replace("{bind}", f"{host}:{port}").replace("{port}", str(port)))
    with log.open("ab") as log_file:
        process = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=run_env,
                                   stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = cls(url=f"http://{host}:{port}", port=port, pid=process.pid, workers=workers,
                 log=log, env=run_env, process=process)
    server.kind = kind
    try:
        _wait_until_healthy(server, time.monotonic() + start_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def start_tidings(directory: Path, sockets: int, workers: int = 1, redis: bool = False,
                  extra: dict[str, str] | None = None, port: int | None = None,
                  host: str = "127.0.0.1", migrate: bool = True,
                  start_timeout: float = 90.0) -> Server:
    """The real site (gunicorn.conf.py, dev mode, fresh SQLite) with bench/server.py's endpoint.

    ``port`` and ``migrate=False`` restart a site on its own address and database (the storm).
    """
    capacity = sockets + 50
    env = {
        **os.environ,
        "TIDINGS_ENV": "development",
        "SECRET_KEY": LIVE_SECRET_KEY,
        "DATABASE_URL": f"sqlite:///{directory / 'bench.db'}",
        "TIDINGS_WORKERS": str(workers),
        "REALTIME_MAX_SOCKETS": str(capacity),
        # Every bench client comes from 127.0.0.1: no per-address limits here.
        "REALTIME_MAX_SOCKETS_PER_ADDRESS": "0",
        "REALTIME_HANDSHAKES_PER_MINUTE_PER_ADDRESS": "0",
        # Sockets hold no gunicorn thread: the default page threads (gunicorn.conf.py) serve.
        "BENCH_TOKEN": TOKEN,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("TIDINGS_CONTROL_SOCKET", None)
    if redis:
        # A private redis-server (tests/support/services.py), never the machine's own.
        env["REDIS_URL"] = services.redis_url()
        env["REALTIME_REDIS_CHANNEL"] = f"tidings-bench-{uuid.uuid4().hex[:8]}"
    env.update(extra or {})
    directory.mkdir(parents=True, exist_ok=True)
    if migrate:
        migrate_database(env)
    return _launch("tidings", directory, "-m gunicorn -c gunicorn.conf.py bench.server:app", env,
                   workers, port=port, host=host, start_timeout=start_timeout)


def start_naive(directory: Path, sockets: int) -> Server:
    """The flask-sock baseline: one gthread worker with 2N+50 threads."""
    threads = 2 * sockets + 50
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = (f"-m gunicorn -k gthread -w 1 --threads {threads} --worker-connections {threads + 100} "
            "-b {bind} --graceful-timeout 2 --log-level warning bench.naive_app:app")
    return _launch("naive", directory, args, env, 1)


def start_ref(directory: Path) -> Server:
    """The reference: bench/ref_server.py (websockets on uvloop), one process."""
    ws_port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = _launch("ref", directory, f"-m bench.ref_server --ws-port {ws_port} "
                     "--http-port {port}", env, 1, cls=RefServer)
    server.ws_port = ws_port  # type: ignore[attr-defined]
    return server
