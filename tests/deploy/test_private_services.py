"""`make test` leaves the machine as it found it: the suite's PostgreSQL and Redis are its own,
in a temporary directory on free ports, and they go away with the session however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest
import redis

from tests.support import services
from tests.support.live import ROOT


def test_the_suites_postgresql_is_a_private_cluster_that_trusts_only_itself():
    if os.environ.get("TIDINGS_TEST_POSTGRES_DSN"):
        pytest.skip("TIDINGS_TEST_POSTGRES_DSN points the suite at a server of your own")
    cluster = services.postgres()
    with psycopg.connect(services.POSTGRES_ADMIN_DSN) as connection:
        settings = dict(connection.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('hba_file', 'data_directory', 'port', 'unix_socket_directories')").fetchall())
    # Its own pg_hba.conf and data, in the temporary folder: the machine's are never read.
    assert Path(settings["hba_file"]).is_relative_to(cluster.root)
    assert Path(settings["data_directory"]).is_relative_to(cluster.root)
    assert Path(settings["unix_socket_directories"]) == cluster.root
    assert int(settings["port"]) == cluster.port != 5432
    assert services.POSTGRES_URL.endswith(f":{cluster.port}/{services.TEST_DATABASE}")


def test_the_suites_redis_is_private_and_keeps_nothing_on_disk():
    if os.environ.get("TIDINGS_TEST_REDIS_URL"):
        pytest.skip("TIDINGS_TEST_REDIS_URL points the suite at a server of your own")
    client = redis.Redis.from_url(services.REDIS_URL)
    assert client.connection_pool.connection_kwargs["port"] != 6379
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}
    assert Path(client.config_get("dir")["dir"]) == services.redis_server().root


SESSION = textwrap.dedent("""
    import json, sys, time
    from tests.support import services
    pg, rd = services.postgres(), services.redis_server()
    print(json.dumps({"pg": pg.process.pid, "pg_root": str(pg.root),
                      "redis": rd.process.pid, "redis_root": str(rd.root)}), flush=True)
    if sys.argv[1] == "hang":
        time.sleep(120)
""")


def run_session(how: str) -> tuple[subprocess.Popen, dict]:
    import json

    env = {k: v for k, v in os.environ.items()
           if k not in ("TIDINGS_TEST_POSTGRES_DSN", "TIDINGS_TEST_REDIS_URL")}
    process = subprocess.Popen([sys.executable, "-c", SESSION, how], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, text=True)
    started = json.loads(process.stdout.readline())
    return process, started


def gone(pid: int, deadline_s: float = 30) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie has exited; it only waits for a reaper that is not us.
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_the_servers_stop_when_the_session_ends_even_when_it_is_killed(how):
    process, started = run_session("exit" if how == "exit" else "hang")
    if how == "kill":
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert gone(started["pg"]), "PostgreSQL outlived its session"
    assert gone(started["redis"]), "Redis outlived its session"
    if how == "exit":
        # A clean end also deletes the data; a killed one's folder goes at the next start.
        assert not Path(started["pg_root"]).exists()
        assert not Path(started["redis_root"]).exists()
    else:
        probe = services._private_dir("probe")
        try:
            assert not Path(started["pg_root"]).exists()
            assert not Path(started["redis_root"]).exists()
        finally:
            (probe / "owner").unlink()
            probe.rmdir()
