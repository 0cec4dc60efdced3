"""``GET /metrics``: the realtime cluster's figures in Prometheus' text format.

Why not prometheus-client's multiprocess mode: our figures already cross workers. Every worker
keeps every worker's latest report (``flask_tidings/cluster.py``), so whichever worker answers a
scrape renders the whole cluster from that aggregate, through a custom collector, into a fresh
``CollectorRegistry`` built per request. Nothing is shared through files, so no
``PROMETHEUS_MULTIPROC_DIR`` is needed, nothing leaks from dead workers (their reports expire),
and two scrapes landing on different workers agree to within one report interval.

Counters carry a ``worker`` label (``host:pid``): each series is one process's own lifetime
count, so ``rate()`` handles a recycled worker as an ordinary counter reset. Each broker message
reaches every worker, so ``messages_published_total`` counts the same message once per worker:
take ``max`` across workers for the site's publish rate, ``sum`` for deliveries.

Access: loopback clients (127.0.0.0/8, ::1) without a proxy header, or any client with
``Authorization: Bearer <METRICS_TOKEN>``. Once a token is configured it is always required,
loopback included, because behind a reverse proxy on the same host every request is "local".
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterator
from typing import Any

from flask import Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.extensions import realtime
from app.ops import bp

PREFIX = "tidings_realtime"

#: (metric suffix, report key, help) for every per-worker counter.
COUNTERS = (
    ("messages_published", "published", "Broker messages fanned out by this worker (every "
     "message reaches every worker: use max across workers)."),
    ("messages_delivered", "delivered_live", "Live frames written to this worker's sockets."),
    ("connections_opened", "opened", "Sockets this worker opened."),
    ("connections_closed", "closed", "Sockets this worker closed."),
    ("cut_offs", "cut_offs", "Slow clients cut off (close 4008, outbox full or stalled)."),
    ("dead_peers", "dead_peers", "Sockets dropped after two silent heartbeats."),
)


class ClusterCollector(Collector):
    """Turns one cluster aggregate into metric families (collected once, then thrown away)."""

    def __init__(self, aggregate: dict[str, Any]):
        self.aggregate = aggregate

    def collect(self) -> Iterator[Metric]:
        rows = self.aggregate["workers"]
        totals = self.aggregate["totals"]

        yield GaugeMetricFamily(f"{PREFIX}_workers", "Workers that reported within the expiry.",
                                value=totals["workers"])
        yield GaugeMetricFamily(f"{PREFIX}_users_online",
                                "Distinct users with an open socket, across workers.",
                                value=totals["users_online"])

        gauges = {
            "sockets": GaugeMetricFamily(f"{PREFIX}_sockets", "Open sockets.", labels=["worker"]),
            "capacity": GaugeMetricFamily(f"{PREFIX}_capacity",
                                          "Sockets the worker admits at most.", labels=["worker"]),
        }
        connected = GaugeMetricFamily(f"{PREFIX}_broker_connected",
                                      "1 when the worker's broker is connected.",
                                      labels=["worker", "broker"])
        lag = GaugeMetricFamily(f"{PREFIX}_broker_lag_seconds",
                                "Age of the last broker message on arrival.", labels=["worker"])
        age = GaugeMetricFamily(f"{PREFIX}_report_age_seconds",
                                "Seconds since the worker's figures arrived.", labels=["worker"])
        counters = {
            key: CounterMetricFamily(f"{PREFIX}_{name}", text, labels=["worker"])
            for name, key, text in COUNTERS
        }
        refused = CounterMetricFamily(f"{PREFIX}_connections_refused",
                                      "Handshakes refused, by reason.", labels=["worker", "reason"])
        closes = CounterMetricFamily(f"{PREFIX}_closes", "Sockets closed, by close code.",
                                     labels=["worker", "code"])

        for row in rows:
            worker = str(row["worker"])
            for key, family in gauges.items():
                family.add_metric([worker], float(row.get(key) or 0))
            broker = row.get("broker") or {}
            connected.add_metric([worker, str(broker.get("kind", "unknown"))],
                                 1.0 if broker.get("state") == "connected" else 0.0)
            lag.add_metric([worker], float(broker.get("lag_ms") or 0) / 1000)
            age.add_metric([worker], float(row.get("age_s") or 0))
            for key, family in counters.items():
                family.add_metric([worker], float(row.get(key) or 0))
            refused.add_metric([worker, "capacity"], float(row.get("refused_capacity") or 0))
            refused.add_metric([worker, "auth"], float(row.get("refused_auth") or 0))
            for code, count in sorted((row.get("close_codes") or {}).items()):
                closes.add_metric([worker, str(code)], float(count))

        yield from gauges.values()
        yield from (connected, lag, age)
        yield from counters.values()
        yield from (refused, closes)


def render_metrics(aggregate: dict[str, Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(aggregate))
    return generate_latest(registry)


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def metrics_allowed() -> bool:
    """Token when one is configured; otherwise a direct (not proxied) loopback client."""
    token = current_app.config.get("METRICS_TOKEN") or os.environ.get("METRICS_TOKEN")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), str(token).encode())
    # A proxy on this host makes every client look local; its forwarding header gives it away.
    proxied = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
    return _is_loopback(request.remote_addr) and not proxied


@bp.get("/metrics")
def metrics() -> Response:
    if not metrics_allowed():
        abort(403)
    body = render_metrics(realtime.cluster_stats())
    return Response(body, content_type=CONTENT_TYPE_LATEST)
