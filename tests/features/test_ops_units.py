"""The pieces behind the ops dashboard without a server: the cluster view, /metrics access, logs."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.ops.logging import KeyValueFormatter
from flask_tidings.cluster import ClusterReporter


class FakeState:
    """Just what ClusterReporter reads from a RealtimeState."""

    def __init__(self, worker: str, users: list[str]):
        self.worker = worker
        self.figures: dict[str, Any] = {"worker": worker, "sockets": 2, "capacity": 10,
                                        "published": 0, "delivered_live": 0,
                                        "broker": {"kind": "redis", "state": "connected"}}
        self.hub = SimpleNamespace(users_online=lambda: list(users))
        self.broker = SimpleNamespace(sent=[], publish=lambda m: self.broker.sent.append(m))

    def stats(self) -> dict[str, Any]:
        return dict(self.figures)


def report_from(worker: str, users: list[str], sockets: int, published_rate: float,
                delivered_rate: float) -> dict[str, Any]:
    return {"k": "control", "op": "stats", "report": {
        "worker": worker, "sockets": sockets, "capacity": 10, "users": users,
        "rates": {"published": published_rate, "delivered_live": delivered_rate},
        "broker": {"kind": "redis", "state": "connected", "lag_ms": 3.0}, "interval": 0.1}}


def test_the_aggregate_adds_sockets_unions_users_and_forgets_silent_workers():
    state = FakeState("h:1", ["1", "2"])
    reporter = ClusterReporter(state, interval=0.1)  # type: ignore[arg-type]
    reporter.serving = True
    reporter.tick()
    reporter.receive(report_from("h:2", ["2", "3"], sockets=5, published_rate=4.0,
                                 delivered_rate=7.0))
    view = reporter.aggregate()
    assert [row["worker"] for row in view["workers"]] == ["h:1", "h:2"]
    assert view["totals"]["sockets"] == 7 and view["totals"]["capacity"] == 20
    assert view["users"] == ["1", "2", "3"] and view["totals"]["users_online"] == 3
    # Every message reaches every worker: the cluster publishes at the busiest worker's rate.
    assert view["totals"]["published_per_s"] == 4.0
    assert view["totals"]["delivered_per_s"] == 7.0
    assert state.broker.sent[-1]["op"] == "stats"

    time.sleep(0.35)  # more than three of h:2's intervals without a report
    reporter.tick()
    assert [row["worker"] for row in reporter.aggregate()["workers"]] == ["h:1"]


def test_a_worker_ignores_its_own_echo_and_rates_come_from_counter_deltas():
    state = FakeState("h:1", [])
    reporter = ClusterReporter(state, interval=0.05)  # type: ignore[arg-type]
    reporter.tick()
    assert state.broker.sent == []  # not serving a site (a CLI job): no report to the others
    state.figures.update(published=10, delivered_live=30)
    time.sleep(0.1)
    report = reporter.local_report()
    assert report["rates"]["published"] > 0 and report["rates"]["delivered_live"] > 0
    reporter.receive({"report": {**report, "sockets": 999}})
    assert reporter.aggregate()["totals"]["sockets"] == 2


@pytest.mark.parametrize(
    ("token", "remote", "headers", "status"),
    [
        (None, "127.0.0.1", {}, 200),
        (None, "::1", {}, 200),
        (None, "10.0.0.5", {}, 403),
        (None, "127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, 403),
        ("s3cret", "127.0.0.1", {}, 403),  # a token, once set, is required even locally
        ("s3cret", "127.0.0.1", {"Authorization": "Bearer wrong"}, 403),
        ("s3cret", "10.0.0.5", {"Authorization": "Bearer s3cret"}, 200),
    ],
)
def test_metrics_are_for_loopback_or_the_token_holder(app, client, monkeypatch, token, remote,
                                                      headers, status):
    monkeypatch.delenv("METRICS_TOKEN", raising=False)
    app.config["METRICS_TOKEN"] = token
    response = client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": remote})
    assert response.status_code == status
    if status == 200:
        names = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))}
        assert "tidings_realtime_sockets" in names


def test_the_metrics_token_can_come_from_the_environment(app, client, monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN", "from-env")
    app.config.pop("METRICS_TOKEN", None)
    assert client.get("/metrics").status_code == 403
    ok = client.get("/metrics", headers={"Authorization": "Bearer from-env"})
    assert ok.status_code == 200


def test_the_dashboard_is_for_admins(client, auth):
    assert client.get("/admin/ops").status_code == 302  # to the login page
    auth.login()
    assert client.get("/admin/ops").status_code == 403
    auth.logout()
    auth.login("boss", "boss-password-1")
    page = client.get("/admin/ops")
    assert page.status_code == 200
    assert b"Operations" in page.data and b"ops:cluster" in page.data


def format_line(message: str, *args: Any, exc: bool = False) -> str:
    record = logging.LogRecord("tidings.realtime", logging.INFO, __file__, 1, message, args, None)
    if exc:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            import sys

            record.exc_info = sys.exc_info()
    return KeyValueFormatter().format(record)


def test_log_lines_are_one_line_of_key_values_with_the_pid():
    line = format_line("socket close conn=%s user=%s worker=%s code=%s reason=%s",
                       "h:9-1", "7", "h:9", 4008, "slow consumer")
    assert 'event="socket close" conn=h:9-1 user=7 worker=h:9 code=4008 reason="slow consumer"' \
        in line
    assert " pid=" in line and "level=info" in line and "logger=tidings.realtime" in line
    refused = format_line("socket refused: origin %s user=%s", "https://evil.example", "7")
    assert 'event="socket refused" detail="origin https://evil.example" user=7' in refused
    failed = format_line("realtime listener failed", exc=True)
    assert "\n" not in failed and 'exc="ValueError: bad\\nthing"' in failed


def test_configure_logging_prints_tidings_records_once(app, capsys):
    from app.ops.logging import configure_logging

    configure_logging(app)
    configure_logging(app)  # a second app in the same process adds no second handler
    logging.getLogger("tidings.realtime").info("socket open conn=%s user=%s", "h:1-1", "3")
    err = capsys.readouterr().err
    assert err.count('event="socket open" conn=h:1-1 user=3') == 1


def test_a_report_stays_small_enough_for_any_broker_however_many_users_are_online():
    import json

    from flask_tidings.cluster import MAX_REPORT_BYTES

    state = FakeState("h:1", [str(n) for n in range(100_000, 105_000)])
    state.figures["users_online"] = 5000
    reporter = ClusterReporter(state, interval=1.0)  # type: ignore[arg-type]
    report = reporter.local_report()
    assert len(json.dumps(report, separators=(",", ":"))) <= MAX_REPORT_BYTES
    assert report["users_truncated"] and 0 < len(report["users"]) < 5000
    assert reporter.aggregate()["totals"]["users_online"] == 5000


def test_the_dashboard_shows_how_far_the_last_announcements_reached_live(app, client, auth):
    from app.extensions import db
    from app.notifications.models import Announcement

    with app.app_context():
        db.session.add(Announcement(title="Maintenance <tonight>", live_reached=3, recipients=5))
        db.session.commit()
    auth.login("boss", "boss-password-1")
    page = client.get("/admin/ops").get_data(as_text=True)
    assert "Maintenance &lt;tonight&gt;" in page
    assert "reached 3 of 5 live" in " ".join(page.split())


# ---- the plain-language page: smoothed rates, delivery time, errors (issue 16, item 10) ------


def worker_row(worker: str, **counters: Any) -> dict[str, Any]:
    return {"worker": worker, **counters}


def test_a_burst_stays_on_the_tiles_for_a_minute_instead_of_falling_to_zero():
    from app.ops.window import CounterWindow

    window = CounterWindow()
    window.add([worker_row("h:1", delivered_live=0, published=0)], now=1000.0)
    # A burst of 300 deliveries in one second, then silence for 40 s.
    window.add([worker_row("h:1", delivered_live=300, published=10)], now=1001.0)
    for second in range(2, 42):
        window.add([worker_row("h:1", delivered_live=300, published=10)], now=1000.0 + second)
    minute = window.last_minute(now=1041.0)
    assert minute["counts"]["delivered_live"] == 300
    assert minute["per_second"]["delivered_live"] == round(300 / 41, 2)
    # The chart's point (last 5 s) is honest about the quiet: 0 now, the burst earlier.
    assert window.chart()[-1][1] == 0.0
    assert max(rate for _, rate in window.chart()) > 0
    # Past the window the burst is gone.
    for second in range(42, 110):
        window.add([worker_row("h:1", delivered_live=300, published=10)], now=1000.0 + second)
    assert window.last_minute(now=1109.0)["counts"]["delivered_live"] == 0


def test_window_counts_survive_a_restarted_worker_and_take_the_busiest_publisher():
    from app.ops.window import CounterWindow

    window = CounterWindow()
    window.add([worker_row("h:1", published=100, delivered_live=500),
                worker_row("h:2", published=100, delivered_live=400)], now=0.0)
    window.add([worker_row("h:1", published=130, delivered_live=560),
                worker_row("h:2", published=125, delivered_live=430),
                worker_row("h:3", published=7, delivered_live=9)], now=10.0)
    # h:2 was recycled: its counters restart from 0 (they count, as they are).
    window.add([worker_row("h:1", published=140, delivered_live=600),
                worker_row("h:2", published=4, delivered_live=20),
                worker_row("h:3", published=17, delivered_live=19)], now=20.0)
    minute = window.last_minute(now=20.0)
    assert minute["counts"]["delivered_live"] == 100 + 20 + 19
    # Every message reaches every worker: the site sent as many as the busiest worker saw.
    assert minute["counts"]["published"] == 40


def test_errors_count_refusals_cut_offs_and_server_closes_but_not_the_network():
    from app.ops.window import CounterWindow

    window = CounterWindow()
    window.add([worker_row("h:1", refused_capacity=1, cut_offs=0, dead_peers=5,
                           close_codes={"1011": 1, "1000": 40})], now=0.0)
    window.add([worker_row("h:1", refused_capacity=3, cut_offs=1, dead_peers=9,
                           close_codes={"1011": 2, "1000": 90, "1001": 4})], now=30.0)
    counts = window.last_minute(now=30.0)["counts"]
    assert (counts["refused_capacity"], counts["cut_offs"], counts["server_errors"],
            counts["dead_peers"]) == (2, 1, 1, 4)


@pytest.mark.parametrize(("payload", "expected"), [
    ('{"type":"x","stream":"s","data":{"ts":1},"ts":1700000000.123456,"id":4}', 1700000000.123456),
    ('{"type":"x","stream":"s","data":null,"ts":1700000001.5}', 1700000001.5),
    ('{"type":"x","stream":"s","data":null}', None),
])
def test_the_publish_time_is_read_from_the_envelopes_last_fields(payload, expected):
    from app.ops.window import payload_timestamp

    assert payload_timestamp(payload) == expected


def test_delivery_times_are_percentiles_over_the_last_minute():
    from app.ops.window import DeliveryTimes

    times = DeliveryTimes()
    for ms in range(1, 101):  # 1 .. 100 ms, all at t=1000
        times.record(published_at=1000.0 - ms / 1000, now=1000.0)
    summary = times.summary(now=1000.0)
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(50, abs=0.01)
    assert summary["p95_ms"] == pytest.approx(95, abs=0.01)
    assert summary["max_ms"] == pytest.approx(100, abs=0.01)
    assert times.summary(now=1061.0) == {"count": 0, "p50_ms": None, "p95_ms": None,
                                         "max_ms": None}


def test_every_event_this_worker_fans_out_is_timed(app):
    """The ops listener reads the envelope's publish time after the worker dispatched it."""
    from app.extensions import realtime

    window = app.extensions["ops"]
    with app.app_context():
        # A worker that serves sockets (publishing alone starts no delivery thread).
        app.extensions["realtime"].ensure_started()
        realtime.publish("user:1", "notification", {"title": "timed"})
    deadline = time.monotonic() + 10
    while window.delivery.summary()["count"] == 0:
        assert time.monotonic() < deadline, "the dispatch was never timed"
        time.sleep(0.02)
    summary = window.delivery.summary()
    assert 0 <= summary["p50_ms"] < 10_000


def aggregate_with(relay: str = "connected", **totals: Any) -> dict[str, Any]:
    base = {"workers": 2, "sockets": 9, "capacity": 20, "users_online": 3, "published": 0,
            "delivered": 0, "published_per_s": 0.0, "delivered_per_s": 0.0, "opened": 9,
            "closed": 0, "refused_capacity": 0, "refused_auth": 0, "cut_offs": 0,
            "dead_peers": 0}
    return {"at": time.time(), "interval": 1.0, "worker": "h:1", "totals": {**base, **totals},
            "users": [], "users_truncated": False, "workers": [],
            "broker": {"kind": "redis", "state": relay, "lag_ms": 1.0}}


def test_the_summary_answers_in_plain_words():
    from app.ops.figures import summary
    from app.ops.window import OpsWindow

    window = OpsWindow()
    quiet = summary(aggregate_with(), window)
    assert quiet["status"] == "ok"
    assert quiet["headline"] == ("All good: 3 people connected, no messages and no errors in "
                                 "the last minute.")
    now = time.time()
    for ms in (8, 10, 12, 30):
        window.delivery.record(now - ms / 1000, now=now)
    busy = summary(aggregate_with(), window)
    assert busy["headline"].startswith("All good: messages reach 3 people in 10 ms")
    assert "95% within 30 ms" in busy["headline"]

    window.counters.add([worker_row("h:1", refused_capacity=0)], now=now - 10)
    window.counters.add([worker_row("h:1", refused_capacity=2)], now=now)
    trouble = summary(aggregate_with(relay="reconnecting"), window)
    assert trouble["status"] == "attention"
    assert trouble["errors"] == {"refused": 2, "cut_off": 0, "server": 0}
    assert trouble["headline"] == ("Needs attention: 2 errors in the last minute; the relay "
                                   "between server processes is reconnecting.")


def test_the_page_speaks_plain_language(client, auth):
    auth.login("boss", "boss-password-1")
    page = " ".join(client.get("/admin/ops").get_data(as_text=True).split())
    for words in ("Connected people", "Messages delivered", "Delivery time (p50/p95)", "Errors",
                  "in the last minute", "All good"):
        assert words in page
    for jargon in ("Pushback", "dead peers", "broker lag"):
        assert jargon not in page
    stats = client.get("/admin/ops/stats").get_json()
    assert {"headline", "people", "delivery", "errors_last_minute"} <= set(stats["summary"])
    assert isinstance(stats["chart"], list)
