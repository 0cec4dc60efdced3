"""Cross-worker figures: every worker reports to the others through the broker, each keeps them all.

Each worker's counters (sockets, messages, refusals ...) live in that process only, and a request
for the ops dashboard or ``/metrics`` lands on one worker. So every ``REALTIME_CLUSTER_INTERVAL``
seconds each worker publishes a small control message ``{"k": "control", "op": "stats", ...}``
with its figures, its rates and the ids of its users online; every worker keeps the latest report
of each worker and forgets a worker that stopped reporting (it died or was recycled). Any worker
can then answer for the whole cluster, at most one interval late.

How a report travels depends on the broker: in-process (one worker, memory broker), through the
durable log (database broker, hence the cap on user ids), or Redis pub/sub to every worker.

This module is part of the reusable realtime layer: it knows nothing about the site.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import frames
from .store import envelope

if TYPE_CHECKING:
    from .extension import RealtimeState

log = logging.getLogger("tidings.realtime")

#: A worker that has not reported for this many of its intervals is dropped from the aggregate.
EXPIRY_INTERVALS = 3
#: Bytes one report may take as JSON: with the database broker every report is a row in the
#: log, and PostgreSQL's NOTIFY drops payloads near 8000 bytes. User ids fill what the figures
#: leave; past it the union of users online is a lower bound (flagged ``users_truncated``).
MAX_REPORT_BYTES = 6000
#: Counters every worker reports; rates are computed from their deltas between two reports.
COUNTERS = (
    "published",
    "delivered_live",
    "opened",
    "closed",
    "refused_capacity",
    "refused_auth",
    "cut_offs",
    "dead_peers",
)

TickHook = Callable[["ClusterReporter"], None]


class ClusterReporter:
    """One per app per process (``state.cluster``): sends this worker's report, keeps everyone's."""

    def __init__(self, state: RealtimeState, interval: float):
        self.state = state
        self.interval = max(0.05, float(interval))
        self._lock = threading.Lock()
        self._reports: dict[str, dict[str, Any]] = {}
        self._received: dict[str, float] = {}
        self._previous: tuple[float, dict[str, int]] | None = None
        self._rates: dict[str, float] = {}
        self._tick_hooks: list[TickHook] = []
        self._started_pid: int | None = None
        self._stopping = threading.Event()
        #: Set once this process serves a request (``ensure_started`` inside a request): a CLI
        #: command or job that only publishes through the broker is no worker and must not
        #: appear in everyone's table.
        self.serving = False

    # ------------------------------------------------------------------ hooks

    def on_tick(self, fn: TickHook) -> TickHook:
        """Run ``fn(reporter)`` on the reporter's thread after every report this worker sends.

        The ops dashboard pushes its view from here: once per interval, per worker, off the
        broker's delivery thread (a slow hook delays the next report, never a message).
        """
        self._tick_hooks.append(fn)
        return fn

    # ------------------------------------------------------------------ this worker

    def start(self, pid: int) -> None:
        """Start reporting in this process (called from ``RealtimeState.ensure_started``)."""
        if self._started_pid == pid:
            return
        self._started_pid = pid
        self._stopping = threading.Event()
        # A forked child inherits the parent's view of the cluster; it starts from nothing.
        with self._lock:
            self._reports.clear()
            self._received.clear()
            self._previous = None
            self._rates = {}
        threading.Thread(target=self._run, name="tidings-cluster", daemon=True).start()

    def stop(self) -> None:
        """Stop reporting in this process (``RealtimeState.stop``)."""
        self._stopping.set()
        self._started_pid = None

    def _run(self) -> None:
        stopping = self._stopping
        while not stopping.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("realtime cluster report failed")
            stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def tick(self) -> None:
        """Send this worker's report to every worker, keep it, then run the tick hooks."""
        report = self.local_report()
        with self._lock:
            # Our own report is kept at once: the broker's echo (ignored in receive) may lag.
            self._reports[report["worker"]] = report
            self._received[report["worker"]] = time.monotonic()
        broker = self.state.broker
        if broker is not None and self.serving:
            broker.publish({"k": "control", "op": "stats", "report": report})
        for hook in list(self._tick_hooks):
            try:
                hook(self)
            except Exception:
                log.exception("realtime cluster tick hook failed")

    def local_report(self) -> dict[str, Any]:
        """This worker's figures now, with per-second rates since the previous report."""
        figures = self.state.stats()
        now = time.monotonic()
        counters = {name: int(figures.get(name) or 0) for name in COUNTERS}
        with self._lock:
            if self._previous is not None:
                then, before = self._previous
                elapsed = now - then
                if elapsed >= self.interval / 2:
                    self._rates = {
                        name: round(max(0, counters[name] - before[name]) / elapsed, 2)
                        for name in COUNTERS
                    }
                    self._previous = (now, counters)
            else:
                self._previous = (now, counters)
            rates = dict(self._rates)
        report = {
            **figures,
            "rates": {name: rates.get(name, 0.0) for name in COUNTERS},
            "users": [],
            "users_truncated": False,
            "interval": self.interval,
            "sent": time.time(),
        }
        users = sorted(self.state.hub.users_online())
        budget = MAX_REPORT_BYTES - len(json.dumps(report, separators=(",", ":")))
        for user in users:
            budget -= len(json.dumps(user)) + 1
            if budget < 0:
                report["users_truncated"] = True
                break
            report["users"].append(user)
        return report

    # ------------------------------------------------------------------ other workers

    def receive(self, message: dict[str, Any]) -> None:
        """Keep a report that arrived through the broker (hooked in ``RealtimeState._deliver``)."""
        report = message.get("report")
        if not isinstance(report, dict) or not isinstance(report.get("worker"), str):
            return
        if report["worker"] == self.state.worker:
            return  # our own echo: tick() stored a fresher copy already
        with self._lock:
            self._reports[report["worker"]] = report
            self._received[report["worker"]] = time.monotonic()

    def reports(self) -> list[dict[str, Any]]:
        """The latest report of every live worker (expired ones are dropped), sorted by worker."""
        now = time.monotonic()
        with self._lock:
            for worker, received in list(self._received.items()):
                report_interval = float(self._reports[worker].get("interval") or self.interval)
                if now - received > EXPIRY_INTERVALS * max(report_interval, self.interval):
                    del self._received[worker]
                    del self._reports[worker]
            rows = [
                {**report, "age_s": round(now - self._received[worker], 3)}
                for worker, report in self._reports.items()
            ]
        return sorted(rows, key=lambda row: row["worker"])

    def aggregate(self) -> dict[str, Any]:
        """The cluster as one worker sees it: totals, the union of users online, per-worker rows.

        Every broker message reaches every worker, so each worker's ``published`` counts the
        same messages: the cluster's publish rate is the highest worker's, not the sum.
        Deliveries go to distinct sockets, so those add up.
        """
        rows = self.reports()
        if not any(row["worker"] == self.state.worker for row in rows):
            # Not reported yet (first request in a fresh worker): show ourselves anyway.
            rows = sorted(
                [*rows, {**self.local_report(), "age_s": 0.0}], key=lambda row: row["worker"]
            )
        users: set[str] = set()
        for row in rows:
            users.update(str(user) for user in row.get("users") or ())

        def total(name: str) -> int:
            return sum(int(row.get(name) or 0) for row in rows)

        def rate_sum(name: str) -> float:
            return round(sum(float(row["rates"].get(name) or 0) for row in rows), 2)

        brokers = [row.get("broker") or {} for row in rows]
        states = {b.get("state", "unknown") for b in brokers}
        return {
            "at": time.time(),
            "interval": self.interval,
            "worker": self.state.worker,
            "totals": {
                "workers": len(rows),
                "sockets": total("sockets"),
                "capacity": total("capacity"),
                # Exact unless a report was cut short; then at least the busiest worker's count.
                "users_online": max(
                    [len(users), *(int(row.get("users_online") or 0) for row in rows)]
                ),
                "published": max((int(row.get("published") or 0) for row in rows), default=0),
                "delivered": total("delivered_live"),
                "published_per_s": max(
                    (float(row["rates"].get("published") or 0) for row in rows), default=0.0
                ),
                "delivered_per_s": rate_sum("delivered_live"),
                "opened": total("opened"),
                "closed": total("closed"),
                "refused_capacity": total("refused_capacity"),
                "refused_auth": total("refused_auth"),
                "cut_offs": total("cut_offs"),
                "dead_peers": total("dead_peers"),
            },
            "users": sorted(users),
            "users_truncated": any(row.get("users_truncated") for row in rows),
            "broker": {
                "kind": next((b.get("kind") for b in brokers if b.get("kind")), "unknown"),
                "state": states.pop() if len(states) == 1 else "mixed",
                "lag_ms": max((float(b.get("lag_ms") or 0) for b in brokers), default=0.0),
            },
            "workers": [
                {key: value for key, value in row.items() if key != "users"} for row in rows
            ],
        }

    # ------------------------------------------------------------------ local push

    def push_local(self, stream: str, type_: str, data: Any) -> int:
        """Write an ephemeral event to this worker's followers of ``stream`` only.

        Every worker holds the whole aggregate, so each one serves its own followers; going
        through the broker would hand every follower one copy per worker. It bypasses the hub's
        counters on purpose, so the dashboard's own pushes do not show up as site traffic.
        Returns how many connections it reached.
        """
        targets = self.state.hub.followers(stream)
        if not targets:
            return 0
        frame = frames.text(envelope(stream, None, type_, data))
        return sum(1 for conn in targets if conn.offer(stream, None, frame))

    def has_local_followers(self, stream: str) -> bool:
        return bool(self.state.hub.followers(stream))
