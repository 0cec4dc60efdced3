"""The last minute of the realtime layer, in this worker: delivery times and counter windows.

The cluster reports counters and per-interval rates; a dashboard built on per-interval rates
falls to 0 between two bursts and says nothing about how long a message took. So the ops
page keeps a short memory here:

- :class:`DeliveryTimes` records, for every event this worker fans out, the time from its
  publish timestamp (the ``ts`` every envelope carries, stamped when the event was stored) to
  the moment this worker had written it to its sockets. Every broker message reaches every
  worker, so each worker measures the whole site's messages; clocks of several hosts must agree
  (NTP) for the figure to mean anything across hosts.
- :class:`CounterWindow` keeps the cluster's counters once per report interval and answers
  "how many in the last minute" from the difference, per worker (a recycled worker starts again
  from 0: its counter is taken as it is).

Both are per app, in ``app.extensions["ops"]``, and bounded in memory.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Seconds the tiles look back: long enough that a quiet gap between bursts does not read 0.
WINDOW_SECONDS = 60.0
#: Delivery times kept at most (the last minute at up to ~80 events/s; beyond, the newest).
MAX_SAMPLES = 5000
#: Counters the window differences, per worker, from each report.
COUNTED = ("published", "delivered_live", "refused_capacity", "cut_offs", "dead_peers",
           "opened", "server_errors")
#: Close codes that mean the server failed a connection (not the client or the network).
SERVER_ERROR_CODES = ("1011",)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (``fraction`` 0..1)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(sorted_values) - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def payload_timestamp(payload: str) -> float | None:
    """The ``ts`` of a wire envelope without parsing the whole event (it is the last fields)."""
    at = payload.rfind('"ts":')
    if at < 0:
        return None
    end = at + 5
    while end < len(payload) and payload[end] in "0123456789.eE+-":
        end += 1
    try:
        return float(payload[at + 5:end])
    except ValueError:
        return None


class DeliveryTimes:
    """Milliseconds from publish to written-to-sockets, for the last :data:`WINDOW_SECONDS`."""

    def __init__(self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.time):
        self.window = window
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)
        self._lock = threading.Lock()

    def record(self, published_at: float, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        with self._lock:
            self._samples.append((now, max(0.0, (now - published_at) * 1000)))

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """``{"count", "p50_ms", "p95_ms", "max_ms"}`` over the window (``None`` without data)."""
        now = self.clock() if now is None else now
        with self._lock:
            while self._samples and now - self._samples[0][0] > self.window:
                self._samples.popleft()
            values = sorted(ms for _, ms in self._samples)
        if not values:
            return {"count": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
        return {
            "count": len(values),
            "p50_ms": round(percentile(values, 0.50), 1),
            "p95_ms": round(percentile(values, 0.95), 1),
            "max_ms": round(values[-1], 1),
        }


def worker_counters(row: dict[str, Any]) -> dict[str, int]:
    """The counters of one worker's report that the window tracks."""
    codes = row.get("close_codes") or {}
    counters = {name: int(row.get(name) or 0) for name in COUNTED if name != "server_errors"}
    counters["server_errors"] = sum(int(codes.get(code) or 0) for code in SERVER_ERROR_CODES)
    return counters


@dataclass
class CounterWindow:
    """The cluster's counters at each report, for differences over the last minute."""

    window: float = WINDOW_SECONDS
    clock: Callable[[], float] = time.time
    #: (time, {worker: counters}), oldest first; one entry per report interval.
    samples: deque[tuple[float, dict[str, dict[str, int]]]] = field(
        default_factory=lambda: deque(maxlen=2000))
    #: (time, delivered per second over the last few seconds): the chart's points.
    points: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=600))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, workers: list[dict[str, Any]], now: float | None = None) -> None:
        now = self.clock() if now is None else now
        entry = {str(row["worker"]): worker_counters(row) for row in workers}
        with self._lock:
            self.samples.append((now, entry))
            while self.samples and now - self.samples[0][0] > self.window + 5:
                self.samples.popleft()
            self.points.append((now, self._rate_since(now - 5, now)["delivered_live"]))

    def _base(self, since: float) -> tuple[float, dict[str, dict[str, int]]] | None:
        """The oldest sample at or after ``since`` (the start of the difference)."""
        for sample in self.samples:
            if sample[0] >= since:
                return sample
        return None

    def _rate_since(self, since: float, now: float) -> dict[str, float]:
        base = self._base(since)
        latest = self.samples[-1] if self.samples else None
        if base is None or latest is None or latest[0] <= base[0]:
            return {name: 0.0 for name in COUNTED}
        elapsed = latest[0] - base[0]
        return {name: value / elapsed
                for name, value in self._deltas(base[1], latest[1]).items()}

    @staticmethod
    def _deltas(then: dict[str, dict[str, int]], now: dict[str, dict[str, int]]
                ) -> dict[str, float]:
        """Per worker difference (a restarted worker's counters count from 0), combined.

        Each broker message reaches every worker, so "published" is the busiest worker's
        difference; everything else happens once per socket and adds up.
        """
        totals = {name: 0.0 for name in COUNTED}
        published = 0.0
        for worker, counters in now.items():
            before = then.get(worker, {})
            for name in COUNTED:
                value = counters.get(name, 0)
                earlier = before.get(name, 0)
                delta = value - earlier if value >= earlier else value
                if name == "published":
                    published = max(published, float(delta))
                else:
                    totals[name] += delta
        totals["published"] = published
        return totals

    def last_minute(self, now: float | None = None) -> dict[str, Any]:
        """Counts over the window and per-second averages (over the time actually covered)."""
        now = self.clock() if now is None else now
        with self._lock:
            base = self._base(now - self.window)
            latest = self.samples[-1] if self.samples else None
            if base is None or latest is None or latest[0] <= base[0]:
                counts = {name: 0.0 for name in COUNTED}
                covered = 0.0
            else:
                counts = self._deltas(base[1], latest[1])
                covered = latest[0] - base[0]
        per_second = {name: round(counts[name] / covered, 2) if covered else 0.0
                      for name in COUNTED}
        return {"seconds": round(covered, 1),
                "counts": {name: int(value) for name, value in counts.items()},
                "per_second": per_second}

    def chart(self, limit: int = 180) -> list[list[float]]:
        """``[[epoch seconds, delivered per second], ...]``, oldest first."""
        with self._lock:
            return [[round(at, 3), round(rate, 2)] for at, rate in list(self.points)[-limit:]]


class OpsWindow:
    """Everything the ops page remembers in this worker (``app.extensions["ops"]``)."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.delivery = DeliveryTimes(clock=clock)
        self.counters = CounterWindow(clock=clock)
