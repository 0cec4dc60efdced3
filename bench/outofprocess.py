"""Out-of-process publish latency: a CLI/cron-like process publishes, open sockets receive.

The embedded default (SQLite, no Redis) under the real site and gunicorn.conf.py, one worker and
two. A separate Python process builds the site's app exactly as a ``flask`` command does and
broadcasts ``--publishes`` events at a bounded rate; every open socket records when each arrives.
Latency is the receive time minus the publisher's clock just before ``realtime.broadcast()`` (so
it includes the durable write), over every (event, socket) pair; "first publish" is the slowest
socket's figure for the process's first event, which also opens the database and the broker (a
cron job that publishes once sees that one).

    .venv/bin/python -m bench.outofprocess            # 200 publishes, 20 sockets, w=1 and w=2

``python -m bench`` runs it too (scenario O). Bounded: each run stops after ``--publishes`` events
or ``TIMEOUT`` seconds, whichever comes first; it only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import websocket

from bench.loadgen import USER_AGENT
from bench.servers import ROOT, Server, start_tidings
from bench.users import create_users, session_cookies

#: The event type the publisher sends; nothing else in the site uses it.
TYPE = "bench.outofprocess"
#: Seconds a whole run (one worker count) may take before it gives up.
TIMEOUT = 120.0
#: Each worker should hold at least this many of the sockets when there are several.
MIN_PER_WORKER = 3


def publish_main(count: int, interval: float) -> None:
    """The publishing process: the site's app as a ``flask`` command builds it, no server."""
    from app import create_app
    from app.extensions import realtime

    app = create_app()
    with app.app_context():
        for n in range(count):
            realtime.broadcast(TYPE, {"n": n, "t0": time.time()})
            time.sleep(interval)


class Tab:
    """One open socket on the broadcast stream, recording (event number, latency) pairs."""

    def __init__(self, server: Server, cookie: str):
        self.ws = websocket.create_connection(
            server.url.replace("http://", "ws://") + "/ws", cookie=cookie, origin=server.url,
            header=[f"User-Agent: {USER_AGENT}"], timeout=30,
        )
        welcome = self._next("welcome")
        self.worker = welcome["conn"].rsplit("-", 1)[0]
        self.ws.send(json.dumps({"type": "subscribe", "stream": "broadcast", "ref": "b"}))
        self._next("subscribed")
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _next(self, type_: str) -> dict[str, Any]:
        while True:
            message = json.loads(self.ws.recv())
            if message.get("type") == type_:
                return message

    def start(self) -> None:
        self._thread.start()

    def _read(self) -> None:
        self.ws.settimeout(0.5)
        while not self._stop.is_set():
            try:
                raw = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                return
            now = time.time()  # before parsing: parse time is the client's, not the server's
            message = json.loads(raw)
            if message.get("type") == TYPE:
                self.samples.append((message["data"]["n"], now - message["data"]["t0"]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.ws.close()
        except Exception:
            pass


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(directory: Path, workers: int, sockets: int, publishes: int,
            interval: float) -> dict[str, Any]:
    """One server (``workers``, SQLite, no Redis), ``sockets`` tabs, one publishing process."""
    server = start_tidings(directory, sockets + MIN_PER_WORKER * workers, workers=workers)
    tabs: list[Tab] = []
    started = time.monotonic()
    try:
        db_url = server.env["DATABASE_URL"]
        cookies = list(session_cookies(db_url, create_users(db_url, sockets + 20)).values())
        # Sockets land on whichever worker accepts them: open more until every worker has some.
        while cookies and (len(tabs) < sockets or min(_per_worker(tabs, workers)) < MIN_PER_WORKER):
            if time.monotonic() - started > TIMEOUT / 2:
                break
            tabs.append(Tab(server, cookies.pop()))
        for tab in tabs:
            tab.start()
        publisher = subprocess.run(
            [sys.executable, "-m", "bench.outofprocess", "--publisher", str(publishes),
             str(interval)],
            cwd=ROOT, env=server.env, capture_output=True, text=True,
            timeout=max(10.0, TIMEOUT - (time.monotonic() - started)),
        )
        if publisher.returncode != 0:
            raise RuntimeError(f"publisher failed:\n{publisher.stderr[-2000:]}")
        expected = publishes * len(tabs)
        deadline = time.monotonic() + 10
        while sum(len(t.samples) for t in tabs) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for tab in tabs:
            tab.close()
        server.stop()
    latencies = [lat * 1000 for tab in tabs for _, lat in tab.samples]
    unique = sum(len({n for n, _ in tab.samples}) for tab in tabs)
    # A cron job publishes once: its first event also pays for opening the database and the
    # broker in a fresh process. The slowest socket's figure for it.
    first = [lat * 1000 for tab in tabs for n, lat in tab.samples if n == 0]
    return {
        "server": "tidings", "scenario": "O", "n": len(tabs), "workers": workers,
        "p50_ms": _percentile(latencies, 0.50), "p99_ms": _percentile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else None, "deliveries_s": None,
        "first_publish_ms": max(first) if first else None,
        "delivered": len(latencies), "expected": expected, "lost": expected - unique,
        "dup": len(latencies) - unique, "publishes": publishes,
        "sockets_per_worker": _per_worker(tabs, workers), "healthy_reach_mean": None,
    }


def _per_worker(tabs: list[Tab], workers: int) -> list[int]:
    counts: dict[str, int] = {}
    for tab in tabs:
        counts[tab.worker] = counts.get(tab.worker, 0) + 1
    found = sorted(counts.values(), reverse=True)
    return found + [0] * (workers - len(found))


def rows(directory: Path, publishes: int = 200, sockets: int = 20, interval: float = 0.02,
         worker_counts: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    """Scenario O for ``python -m bench``: one row per worker count (a failed run is reported
    and skipped, so it cannot lose the figures of the scenarios before it)."""
    found = []
    for workers in worker_counts:
        print(f"== out-of-process publish, {workers} worker(s)", flush=True)
        try:
            found.append(measure(directory / f"w{workers}", workers, sockets, publishes, interval))
        except Exception as exc:
            print(f"  !! failed: {exc!r}", flush=True)
            continue
        print("  " + table(found[-1:]).splitlines()[1].strip(), flush=True)
    return found


def table(found: list[dict[str, Any]]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = ["workers  sockets (per worker)  publishes  delivered      p50 ms  p99 ms  max ms"
             "  first publish ms"]
    for r in found:
        lines.append(
            f"{r['workers']:>7}  {r['n']:>7} {str(r['sockets_per_worker']):<12}  "
            f"{r['publishes']:>9}  {r['delivered']:>5}/{r['expected']:<6}  {ms(r['p50_ms']):>6}  "
            f"{ms(r['p99_ms']):>6}  {ms(r['max_ms']):>6}  {ms(r['first_publish_ms']):>16}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outofprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--publishes", type=int, default=200, help="events (at most 2,000)")
    parser.add_argument("--sockets", type=int, default=20, help="open sockets (at most 200)")
    parser.add_argument("--interval", type=float, default=0.02,
                        help="seconds between publishes (at least 0.001)")
    parser.add_argument("--publisher", nargs=2, metavar=("COUNT", "INTERVAL"),
                        help=argparse.SUPPRESS)  # the publishing child process
    args = parser.parse_args(argv)
    if args.publisher:
        publish_main(min(int(args.publisher[0]), 2000), max(float(args.publisher[1]), 0.001))
        return 0
    publishes = max(1, min(args.publishes, 2000))
    sockets = max(1, min(args.sockets, 200))
    with tempfile.TemporaryDirectory(prefix="tidings-oop-") as directory:
        found = rows(Path(directory), publishes, sockets, max(args.interval, 0.001))
    print(table(found))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
