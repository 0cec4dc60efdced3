"""Faults survived: Redis restarted mid-stream, a worker killed, nothing lost or shown twice."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import redis
import websocket

from tests.support import services
from tests.support.live import free_port, start_live_server
from tests.support.sockets import Client, publisher


class PrivateRedis:
    """A redis-server of this test's own, so restarting it disturbs nobody else."""

    def __init__(self, directory):
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=5)


@pytest.fixture
def private_redis(tmp_path):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed; `make test` installs it (scripts/test-services.sh)")
    instance = PrivateRedis(tmp_path)
    instance.start()
    yield instance
    if instance.process and instance.process.poll() is None:
        instance.kill()


def test_redis_restarted_mid_stream_loses_nothing(tmp_path, private_redis, live_login_as):
    server = start_live_server(tmp_path / "srv", workers=2,
                               env={"REDIS_URL": private_redis.url, "REALTIME_SWEEP_INTERVAL": "1"})
    try:
        client = Client(server, live_login_as(server, "alice", "alice-demo-pass"))
        client.subscribe("broadcast")
        jobs = publisher(server)
        sent = [jobs.broadcast("announcement", {"n": i})[0].seq for i in range(5)]
        private_redis.kill()
        # Published while Redis is down: stored, announced to nobody.
        sent += [jobs.broadcast("announcement", {"n": 5 + i})[0].seq for i in range(5)]
        time.sleep(0.5)
        private_redis.start()
        sent += [jobs.broadcast("announcement", {"n": 10 + i})[0].seq for i in range(5)]
        got = client.events(15, "broadcast", timeout=30)
        assert [m["id"] for m in got] == sent
        client.close()
    finally:
        server.stop()


def reconnect(server, http, deadline_s: float = 30) -> Client:
    """Reconnect the way the browser client does: retry until a live worker accepts."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return Client(server, http)
        except (OSError, websocket.WebSocketException):
            assert time.monotonic() < deadline, "no worker accepted the reconnect"
            time.sleep(0.2)


def test_a_killed_worker_loses_nothing_for_a_reconnecting_client(tmp_path, live_login_as):
    server = start_live_server(tmp_path, workers=1, env={"REALTIME_SWEEP_INTERVAL": "1"})
    try:
        http = live_login_as(server, "alice", "alice-demo-pass")
        client = Client(server, http)
        client.subscribe("broadcast")
        jobs = publisher(server)
        first = jobs.broadcast("announcement", {"n": 0})[0].seq
        cursor = client.events(1, "broadcast")[0]["id"]
        assert cursor == first
        [worker] = server.worker_pids()
        os.kill(worker, signal.SIGKILL)
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
            client.recv(timeout=10)
        missed = [jobs.broadcast("announcement", {"n": i})[0].seq for i in range(1, 11)]
        again = reconnect(server, http)  # gunicorn starts a new worker meanwhile
        again.subscribe("broadcast", after=cursor)
        assert [m["id"] for m in again.events(10, "broadcast")] == missed
        again.close()
    finally:
        server.stop()


def test_a_gunicorn_reload_closes_with_1001_and_clients_resume(tmp_path, live_login_as):
    server = start_live_server(tmp_path, workers=2, env={"REALTIME_SWEEP_INTERVAL": "1"})
    try:
        http = live_login_as(server, "alice", "alice-demo-pass")
        client = Client(server, http)
        client.subscribe("broadcast")
        jobs = publisher(server)
        cursor = jobs.broadcast("announcement", {"n": 0})[0].seq
        assert client.events(1, "broadcast")[0]["id"] == cursor
        old_workers = set(server.worker_pids())
        os.kill(server.pid, signal.SIGHUP)  # gunicorn reload: new workers, old ones get SIGTERM
        code, _ = client.close_frame(timeout=15)
        assert code == 1001
        client.close()
        missed = [jobs.broadcast("announcement", {"n": i})[0].seq for i in range(1, 6)]
        deadline = time.monotonic() + 30
        while set(server.worker_pids()) & old_workers or len(server.worker_pids()) < 2:
            assert time.monotonic() < deadline, "the reload did not replace the workers"
            time.sleep(0.2)
        again = reconnect(server, http)
        again.subscribe("broadcast", after=cursor)
        assert [m["id"] for m in again.events(5, "broadcast")] == missed
        again.close()
    finally:
        server.stop()


def test_postgresql_restarted_mid_stream_loses_nothing(tmp_path, live_login_as):
    """The log and the broker both live in PostgreSQL; restart the server under them."""
    import psycopg

    # The suite's private server (tests/support/services.py): restarting it disturbs nobody.
    cluster = services.postgres()
    name = f"tidings_rs_{os.getpid()}"
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = cluster.url(name)
    server = start_live_server(tmp_path, workers=2,
                               env={"DATABASE_URL": url, "REALTIME_SWEEP_INTERVAL": "1"})
    try:
        http = live_login_as(server, "alice", "alice-demo-pass")
        client = Client(server, http)
        client.subscribe("broadcast")
        jobs = publisher(server)
        sent = [jobs.broadcast("announcement", {"n": i})[0].seq for i in range(3)]
        assert [m["id"] for m in client.events(3, "broadcast")] == sent
        cluster.restart()
        deadline = time.monotonic() + 30
        while True:  # the publisher's pool sees dead connections first; retry like a job would
            try:
                sent += [jobs.broadcast("announcement", {"n": 3 + i})[0].seq for i in range(3)]
                break
            except Exception:
                assert time.monotonic() < deadline, "PostgreSQL did not come back"
                time.sleep(0.5)
        assert [m["id"] for m in client.events(3, "broadcast", timeout=30)] == sent[3:]
        client.close()
    finally:
        server.stop()
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
