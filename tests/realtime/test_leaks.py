"""1,000 connect/disconnect cycles leave no threads, file descriptors or memory behind."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app import passwords
from tests.support.live import start_live_server
from tests.support.sockets import Client


def worker_figures(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "threads": int(fields["Threads"].strip()),
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def cycle(server, http, count: int, parallel: int = 8) -> None:
    def one(_: int) -> None:
        client = Client(server, http)
        client.subscribe("broadcast")
        client.close()

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(count)))


def settle(server, pid: int, baseline: dict[str, int]) -> dict[str, int]:
    """Wait (bounded) until the worker has closed what the last cycles opened."""
    deadline = time.monotonic() + 20
    while True:
        figures = worker_figures(pid)
        sockets = server_sockets(server)
        if sockets == 0 and figures["fds"] <= baseline["fds"] + 2:
            return figures
        if time.monotonic() > deadline:
            return figures
        time.sleep(0.2)


def server_sockets(server) -> int:
    import requests

    return requests.get(server.url + "/healthz", timeout=5).json()["realtime"]["sockets"]


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    server = start_live_server(tmp_path_factory.mktemp("leaks"), workers=1,
                               # One account subscribing 1,200 times as fast as it can is
                               # over its command budget (REALTIME_USER_RATE, tested apart).
                               env={"REALTIME_MAX_SOCKETS_PER_USER": "1000",
                                    "REALTIME_USER_RATE": "0"})
    yield server
    server.stop()


def test_connect_disconnect_cycles_return_threads_fds_and_memory_to_baseline(one_worker,
                                                                              live_login_as):
    server = one_worker
    http = live_login_as(server, "alice", "alice-demo-pass")
    [pid] = server.worker_pids()
    # Warm up: gunicorn's thread pool grows to the concurrency used, caches fill, then stay.
    cycle(server, http, 200)
    baseline = settle(server, pid, worker_figures(pid))
    cycle(server, http, 1000)
    after = settle(server, pid, baseline)
    assert server_sockets(server) == 0
    # Sockets hold no thread: the count is bounded by the fixed pools (gunicorn's 32 threads, 16
    # command threads, the password-hashing threads, the reactor, broker and sweeper), however
    # many sockets came and went.
    assert after["threads"] <= 32 + 16 + passwords.THREADS + 8, (baseline, after)
    assert after["fds"] <= baseline["fds"] + 2, (baseline, after)
    # Generous: allocator noise, not a per-connection leak (1,000 leaked connections would be MBs).
    assert after["rss_kb"] <= baseline["rss_kb"] + 8 * 1024, (baseline, after)
