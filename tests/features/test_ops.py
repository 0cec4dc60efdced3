"""Site admins watch the realtime cluster live at /admin/ops, and Prometheus scrapes /metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.realtime.test_delivery import clients_on_both_workers
from tests.support import services
from tests.support.live import live_login, start_live_server
from tests.support.sockets import Client, publisher

#: Fast reports so the dashboard moves within a second or two.
INTERVAL = "0.5"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two gunicorn workers reporting to each other through the local Redis."""
    live = start_live_server(
        tmp_path_factory.mktemp("ops"),
        workers=2,
        env={"REDIS_URL": services.REDIS_URL,
             "REALTIME_REDIS_CHANNEL": f"tidings-ops-{uuid.uuid4().hex}",
             "REALTIME_CLUSTER_INTERVAL": INTERVAL},
    )
    yield live
    live.stop()


def watch(client: Client, until: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict:
    """Read ``ops.stats`` pushes until one satisfies ``until``; fail with the last one seen."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        message = client.recv(max(0.1, deadline - time.monotonic()))
        if message.get("type") == "ops.stats" and message.get("stream") == "ops:cluster":
            last = message["data"]
            if until(last):
                return last
    raise AssertionError(f"the dashboard never showed it; last push: {last}")


def scrape(server, **headers: str) -> dict[str, list]:
    """``/metrics`` parsed by prometheus-client's own parser: family name -> samples."""
    response = requests.get(server.url + "/metrics", headers=headers, timeout=5)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"].startswith("text/plain")
    return {family.name: family.samples
            for family in text_string_to_metric_families(response.text)}


def total(families: dict[str, list], name: str) -> float:
    return sum(sample.value for sample in families.get(name, []))


def test_an_admin_sees_sockets_on_both_workers_come_and_go(cluster):
    users = live_login(cluster, "alice", "alice-demo-pass")
    sockets = clients_on_both_workers(cluster, users)
    sockets.append(Client(cluster, users))
    admin = Client(cluster, live_login(cluster, "admin", "admin-demo-pass"))
    try:
        assert admin.subscribe("ops:cluster")["type"] == "subscribed"
        workers = {s.pid for s in sockets}
        assert len(workers) == 2

        busy = watch(admin, lambda v: v["totals"]["workers"] == 2
                     and v["totals"]["sockets"] >= len(sockets) + 1
                     and "alice" in v["users"])
        assert {int(row["worker"].rsplit(":", 1)[1]) for row in busy["workers"]} == workers
        assert busy["totals"]["capacity"] == sum(row["capacity"] for row in busy["workers"])
        assert busy["totals"]["users_online"] >= 2  # alice and admin
        assert busy["broker"]["kind"] == "redis"

        for client in sockets:
            client.close()
        quiet = watch(admin, lambda v: v["totals"]["sockets"] == 1 and "alice" not in v["users"])
        assert quiet["users"] == ["admin"]
        assert quiet["totals"]["workers"] == 2
    finally:
        for client in sockets:
            client.close()
        admin.close()


def test_the_dashboard_page_renders_the_cluster_for_admins_only(cluster):
    admin = live_login(cluster, "admin", "admin-demo-pass")
    page = admin.get(cluster.url + "/admin/ops", timeout=5)
    assert page.status_code == 200
    assert 'data-stream="ops:cluster"' in page.text
    assert "/static/js/ops.js" in page.text and "/static/css/ops.css" in page.text
    assert "<canvas" in page.text
    figures = admin.get(cluster.url + "/admin/ops/stats", timeout=5).json()
    assert figures["totals"]["workers"] >= 1 and figures["broker"]["kind"] == "redis"

    alice = live_login(cluster, "alice", "alice-demo-pass")
    assert alice.get(cluster.url + "/admin/ops", timeout=5).status_code == 403
    assert alice.get(cluster.url + "/admin/ops/stats", timeout=5).status_code == 403
    anonymous = requests.get(cluster.url + "/admin/ops", timeout=5, allow_redirects=False)
    assert anonymous.status_code == 302 and "/auth/login" in anonymous.headers["Location"]


@pytest.mark.parametrize("stream", ["ops:cluster", "ops:anything"])
def test_a_user_cannot_follow_the_operations_stream(cluster, stream):
    client = Client(cluster, live_login(cluster, "bob", "bob-demo-pass"))
    try:
        reply = client.subscribe(stream)
        assert reply["type"] == "error" and reply["code"] == "forbidden"
    finally:
        client.close()


def test_metrics_count_the_messages_that_flow(cluster):
    before = scrape(cluster)
    assert {"tidings_realtime_sockets", "tidings_realtime_capacity",
            "tidings_realtime_messages_published", "tidings_realtime_messages_delivered",
            "tidings_realtime_connections_opened", "tidings_realtime_connections_closed",
            "tidings_realtime_connections_refused", "tidings_realtime_cut_offs",
            "tidings_realtime_dead_peers", "tidings_realtime_broker_connected"} <= set(before)
    # Only gunicorn workers report: not this test process, which publishes through the broker.
    pids = {int(s.labels["worker"].rsplit(":", 1)[1])
            for s in before["tidings_realtime_sockets"]}
    assert pids and pids <= set(cluster.worker_pids())
    assert all(s.value == 1 for s in before["tidings_realtime_broker_connected"])

    client = Client(cluster, live_login(cluster, "alice", "alice-demo-pass"))
    try:
        stream = client.own_stream
        client.subscribe(stream)
        jobs = publisher(cluster)
        for n in range(5):
            jobs.publish(stream, "notification", {"n": n})
        client.events(5, stream)

        delivered = "tidings_realtime_messages_delivered_total"
        published = "tidings_realtime_messages_published_total"
        deadline = time.monotonic() + 10
        while True:
            after = scrape(cluster)
            moved = (total(after, "tidings_realtime_messages_delivered")
                     >= total(before, "tidings_realtime_messages_delivered") + 5
                     and total(after, "tidings_realtime_messages_published")
                     >= total(before, "tidings_realtime_messages_published") + 5)
            if moved:
                break
            assert time.monotonic() < deadline, (before.get(delivered), after.get(delivered),
                                                 after.get(published))
            time.sleep(0.2)
        assert total(after, "tidings_realtime_sockets") >= 1
        assert total(after, "tidings_realtime_connections_opened") > 0
    finally:
        client.close()


def test_metrics_refuse_a_client_that_came_through_a_proxy(cluster):
    response = requests.get(cluster.url + "/metrics", timeout=5,
                            headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 403


def test_socket_lifecycle_is_logged_one_line_per_event_with_the_worker_pid(cluster):
    client = Client(cluster, live_login(cluster, "bob", "bob-demo-pass"))
    pid = client.pid
    conn = client.welcome["conn"]
    client.close()
    log = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = cluster.read_log()
        if "logger=tidings" not in log:
            pytest.skip("configure_logging(app) is not called from create_app yet")
        if f'event="socket close" conn={conn}' in log:
            break
        time.sleep(0.1)
    opened = [line for line in log.splitlines()
              if f'event="socket open" conn={conn}' in line]
    closed = [line for line in log.splitlines()
              if f'event="socket close" conn={conn}' in line]
    assert len(opened) == 1 and len(closed) == 1, log[-2000:]
    assert f"pid={pid}" in opened[0] and f"pid={pid}" in closed[0]
    assert "code=" in closed[0]
