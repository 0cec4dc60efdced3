"""Flood: one hostile client sends as fast as it can while N healthy clients receive broadcasts.

    .venv/bin/python -m bench.flood [--users 500] [--seconds 5] [--message mark_read|ping]

The real site (one gunicorn worker, bench/servers.py); N bench users on the picows load
generator (bench/loadgen.py) follow ``broadcast``, which is published at 20/s as in scenario A of
bench/run.py. The latencies of the healthy clients are measured twice: alone, then while one
more user floods. The flooder writes frames back to back without reading; the server answers
the excess with ``rate_limited`` errors, then closes with 4029. A real attacker reconnects at
once, so the flooder does too, for the whole measured window: the figures show the first
connection's fate and what the reconnect loop achieved in total.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import websocket

from bench.loadgen import USER_AGENT, Clients, Spec
from bench.run import RATE, SECONDS, SIZE, publish_at_rate
from bench.servers import Server, start_tidings
from bench.users import create_users, session_cookies

#: What the flooder sends: a command that writes to the database, or the cheapest frame there is.
MESSAGES = {
    "mark_read": {"type": "notifications.mark_read", "data": {"all": True}},
    "ping": {"type": "ping"},
}


class Flooder:
    """One user, one socket at a time, writing frames back to back (websocket-client, a writer
    and a reader thread, so the close frame is seen the moment it arrives); reconnects at once
    when cut."""

    def __init__(self, url: str, origin: str, cookie: str, message: dict[str, Any]):
        self.url, self.origin, self.cookie = url, origin, cookie
        self.frame = json.dumps(message)
        self.connections: list[dict[str, Any]] = []
        self.refused: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ws = websocket.create_connection(
                    self.url, cookie=self.cookie, origin=self.origin, timeout=10,
                    header=[f"User-Agent: {USER_AGENT}"])
            except websocket.WebSocketBadStatusException as exc:
                self.refused[exc.status_code] += 1
                time.sleep(0.05)
                continue
            except OSError as exc:
                self.refused[type(exc).__name__] += 1
                time.sleep(0.05)
                continue
            try:
                self._one(ws)
            finally:
                ws.shutdown()  # an attacker does not wait for a polite teardown

    def _one(self, ws: websocket.WebSocket) -> None:
        stats: dict[str, Any] = {"sent": 0, "replies": 0, "rate_limited": 0, "other": 0,
                                 "close": None, "seconds_to_close": None}
        welcome = json.loads(ws.recv())
        assert welcome["type"] == "welcome", welcome
        self.connections.append(stats)
        closed = threading.Event()
        started = time.monotonic()

        def read() -> None:
            try:
                while True:
                    opcode, data = ws.recv_data(control_frame=True)
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        stats["seconds_to_close"] = time.monotonic() - started
                        stats["close"] = struct.unpack("!H", data[:2])[0] if len(data) >= 2 \
                            else 1005
                        return
                    if opcode != websocket.ABNF.OPCODE_TEXT:
                        continue
                    message = json.loads(data)
                    kind = message.get("type")
                    if kind in ("reply", "pong"):
                        stats["replies"] += 1
                    elif kind == "error" and message.get("code") == "rate_limited":
                        stats["rate_limited"] += 1
                    elif kind != "hb":
                        stats["other"] += 1
            except (websocket.WebSocketException, OSError):
                return
            finally:
                closed.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        frame = websocket.ABNF.create_frame(self.frame, websocket.ABNF.OPCODE_TEXT)
        try:
            while not closed.is_set() and not self._stop.is_set():
                ws.send_frame(frame)
                stats["sent"] += 1
        except (websocket.WebSocketException, OSError):
            pass
        closed.wait(5)

    def summary(self, seconds: float) -> dict[str, Any]:
        conns = self.connections
        closed = [c["seconds_to_close"] for c in conns if c["seconds_to_close"] is not None]
        total = {k: sum(c[k] for c in conns) for k in ("sent", "replies", "rate_limited")}
        return {
            "first": conns[0] if conns else None,
            "connections": len(conns),
            "closes": dict(Counter(str(c["close"]) for c in conns)),
            "handshakes_refused": dict(self.refused),
            **total,
            "replies_per_s": total["replies"] / seconds if seconds else None,
            "median_ms_to_close": float(np.median(closed)) * 1000 if closed else None,
        }


def measure(server: Server, clients: Clients, healthy: int, seconds: float) -> dict[str, Any]:
    """Scenario A: broadcasts at RATE/s to every healthy client; their latency and loss."""
    clients.reset()
    first = server.head() + 1
    publish_at_rate(server, RATE, seconds, SIZE)
    last = server.head()
    count = last - first + 1
    clients.wait_for(healthy * count, timeout=20.0, idle=3.0)
    rep = clients.report({"broadcast": list(range(first, last + 1))})
    lat = np.asarray(rep["lat"]) if rep["lat"] else np.asarray([float("nan")])
    return {"broadcasts": count, "delivered": sum(rep["reach"].values()),
            "expected": healthy * count, "lost": rep["lost"], "dup": rep["dup"],
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()), "healthy_disconnected": rep["healthy_disconnected"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--message", choices=sorted(MESSAGES), default="mark_read")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    if not 0 < args.users <= 5000 or not 0 < args.seconds <= 120:
        parser.error("--users is in (0, 5000] and --seconds in (0, 120]")

    workdir = Path(tempfile.mkdtemp(prefix="tidings-flood-"))
    print(f"== flood: {args.users} healthy clients, broadcasts at {RATE}/s for {args.seconds:g}s, "
          f"one flooder sending {args.message!r}", flush=True)
    server = start_tidings(workdir, args.users + 1, workers=1)
    clients = None
    try:
        db_url = server.env["DATABASE_URL"]
        uids = create_users(db_url, args.users + 1, prefix="flood")
        cookies = session_cookies(db_url, uids)
        flooder_uid, healthy_uids = uids[-1], uids[:-1]
        server.post("/bench/broadcast", {"n": 1, "size": 16})  # warm the publish path
        ws_url = server.url.replace("http://", "ws://") + "/ws"
        clients = Clients(ws_url, server.url)
        specs = [Spec(i, uid, cookies[uid], ("broadcast", f"user:{uid}"))
                 for i, uid in enumerate(healthy_uids)]
        conn = clients.connect(specs)
        print(f"  connected {conn['connected']}/{len(specs)} in {conn['seconds']:.1f}s "
              f"{conn['errors'][:2]}", flush=True)
        healthy = conn["connected"]

        alone = measure(server, clients, healthy, args.seconds)
        print(f"  without flooder: p50 {alone['p50_ms']:.1f} ms, p99 {alone['p99_ms']:.1f} ms, "
              f"lost {alone['lost']}, dup {alone['dup']}", flush=True)

        flooder = Flooder(ws_url, server.url, cookies[flooder_uid], MESSAGES[args.message])
        flooder.start()
        time.sleep(0.5)  # the first flood connection is under way before the clock starts
        started = time.monotonic()
        flooded = measure(server, clients, healthy, args.seconds)
        flood_seconds = time.monotonic() - started + 0.5
        flooder.stop()
        flood = flooder.summary(flood_seconds)
        print(f"  with flooder:    p50 {flooded['p50_ms']:.1f} ms, p99 {flooded['p99_ms']:.1f} ms, "
              f"lost {flooded['lost']}, dup {flooded['dup']}", flush=True)
        first = flood["first"] or {}
        print(f"  flooder, first connection: sent {first.get('sent')}, "
              f"rate_limited {first.get('rate_limited')}, replies {first.get('replies')}, "
              f"close {first.get('close')} after "
              f"{(first.get('seconds_to_close') or float('nan')) * 1000:.0f} ms", flush=True)
        print(f"  flooder, reconnecting for {flood_seconds:.1f}s: {flood['connections']} "
              f"connections, closes {flood['closes']}, sent {flood['sent']}, rate_limited "
              f"{flood['rate_limited']}, replies {flood['replies']} "
              f"({flood['replies_per_s']:.0f}/s), median time to close "
              f"{flood['median_ms_to_close'] or float('nan'):.0f} ms, handshakes refused "
              f"{flood['handshakes_refused']}", flush=True)
        problems = server.log_problems()
        if problems:
            print(f"  server log: {len(problems)} problem lines, first: {problems[0][:200]}")
        if args.json:
            args.json.write_text(json.dumps({"without": alone, "with": flooded, "flooder": flood,
                                             "log_problems": problems[:50]}, indent=1))
    finally:
        if clients is not None:
            clients.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
