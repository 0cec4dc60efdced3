"""Scale-out across hosts: three gunicorn masters on their own addresses behind nginx, sharing
PostgreSQL (the durable log) and Redis (the broker).

    .venv/bin/python -m bench.multihost                      # quick: 300 sockets, 60 s soak
    .venv/bin/python -m bench.multihost --sockets 1500 --soak 300

Each "host" is a gunicorn master (``-c gunicorn.conf.py``, its own workers) bound to 127.0.0.2,
.3 and .4 on one port; nginx (a private prefix, config, pid and logs under bench/results/,
never the system's) listens on 127.0.0.1 and spreads the sockets over the three. The database is
a private one created on the machine's PostgreSQL and dropped at the end; the Redis channel is
private too (``REALTIME_REDIS_CHANNEL``), so nothing else on the machine sees these events.

1. **Latency**: broadcasts are published on host 1 (its bench endpoint, one per request) at
   ``--rate``/s; each delivery's latency is charged to the host whose worker delivered it, so
   host 1's sockets give the same-host figure and hosts 2 and 3's the cross-host one.
2. **Soak**: publishing goes on for ``--soak`` seconds; a third of the way in, host 3 is killed
   (SIGKILL to its master and workers: no close frame, as when a machine dies). Its clients
   reconnect through nginx with the browser's backoff and resume from the shared log. At the
   end every client must have every broadcast published during the soak: lost = 0.

The results go to the terminal, ``bench/results/multihost-<stamp>.json`` and the multi-host
section of bench/RESULTS.md. Loopback only; every process started here is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import requests

from bench.loadgen import Clients, Spec
from bench.report import write_multihost
from bench.run import RESULTS
from bench.servers import Server, start_tidings
from bench.users import create_users, session_cookies
from tests.support.live import migrate_database

#: A PostgreSQL superuser DSN and a Redis URL to use instead of private instances. By default the
#: bench starts its own (tests/support/services.py: own data directory, free port, stopped at the
#: end): three hosts' pools need more than a stock server's 100 connections at peak (the machine's
#: answered "too many clients already" to 7 handshakes of 1,500), and nothing else should see
#: the load.
ADMIN_DSN = os.environ.get("TIDINGS_BENCH_POSTGRES_DSN", "")
REDIS_URL = os.environ.get("TIDINGS_BENCH_REDIS_URL", "")
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")

NGINX_CONF = """
worker_processes 1;
worker_rlimit_nofile 65536;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
daemon off;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream tidings {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://tidings;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # A socket lives for hours; the site's heartbeats keep it busy every 25 s.
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            # A dead host: try the next one (the handshake was not sent yet).
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


def _free_port(hosts: tuple[str, ...]) -> int:
    """A port free on every one of ``hosts`` (and 127.0.0.1)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as other:
                    other.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every host address")


class Nginx:
    """nginx with a private prefix and config, in the foreground (``daemon off``) as our child."""

    def __init__(self, directory: Path, upstreams: list[str]):
        self.directory = directory
        (directory / "tmp").mkdir(parents=True, exist_ok=True)
        os.chmod(directory / "tmp", 0o777)  # its workers run as nobody when we are root
        self.port = _free_port(())
        servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=10s;" for u in upstreams)
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=directory, servers=servers, port=self.port))
        self.process = subprocess.Popen(
            [NGINX, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("nginx exited: " + (directory / "error.log").read_text()[-2000:])
            try:
                if requests.get(self.url + "/healthz", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("nginx did not answer in 20 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def _database() -> tuple[str, Any]:
    """A fresh database (on a private PostgreSQL unless TIDINGS_BENCH_POSTGRES_DSN names one),
    and how to drop it (and stop the private server)."""
    server = None
    dsn = ADMIN_DSN
    if not dsn:
        from tests.support import services

        server = services.postgres()
        dsn = server.admin_dsn
    name = f"tidings_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        if server is not None:
            server.destroy()

    url = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{url}/{name}", drop


def _redis() -> tuple[str, Any]:
    """A Redis URL (a private redis-server unless TIDINGS_BENCH_REDIS_URL names one), and how to
    stop it."""
    if REDIS_URL:
        return REDIS_URL, lambda: None
    from tests.support import services

    server = services.redis_server()
    return server.url, server.destroy


def _tags_by_host(hosts: list[Server]) -> dict[str, int]:
    """Which host each worker tag belongs to. The welcome names a worker only by a random tag
    (the start of each connection id), never its host or pid; each worker logs its sockets'
    ids, so the hosts' logs say which tags are theirs."""
    found: dict[str, int] = {}
    for n, server in enumerate(hosts, 1):
        for tag in re.findall(r"socket open\"? conn=([0-9a-f]+)-", server.read_log()):
            found[tag] = n
    return found


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None}
    arr = np.asarray(values)
    return {"n": len(values), "p50_ms": float(np.percentile(arr, 50)),
            "p99_ms": float(np.percentile(arr, 99))}


def _publish_for(server: Server, seconds: float, rate: float, stop: threading.Event) -> int:
    """One broadcast per request to ``server`` at ``rate``/s for ``seconds``; returns how many."""
    sent = 0
    start = time.monotonic()
    while not stop.is_set() and time.monotonic() - start < seconds:
        server.post("/bench/broadcast", {"n": 1, "size": 64}, timeout=30)
        sent += 1
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.multihost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=300, help="clients, spread by nginx")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per host")
    parser.add_argument("--rate", type=float, default=10.0, help="broadcasts per second")
    parser.add_argument("--latency", type=float, default=10.0, help="seconds of phase 1")
    parser.add_argument("--soak", type=float, default=60.0, help="seconds of phase 2")
    parser.add_argument("--broker", choices=("redis", "postgres"), default="redis",
                        help="Redis pub/sub (default) or PostgreSQL LISTEN/NOTIFY, no Redis")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"multihost-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    db_url, drop_database = _database()
    stop_redis = None
    hosts: list[Server] = []
    nginx: Nginx | None = None
    clients: Clients | None = None
    started = time.time()
    try:
        shared = {"DATABASE_URL": db_url,
                  "REALTIME_REDIS_CHANNEL": f"tidings-bench-{uuid.uuid4().hex[:8]}",
                  "REALTIME_BROKER": args.broker}
        if args.broker == "redis":
            shared["REDIS_URL"], stop_redis = _redis()
        migrate_database({**os.environ, "TIDINGS_ENV": "development", **shared})
        port = _free_port(HOSTS)
        # Each host must be able to take every socket of a dead one: sized for all of them.
        per_host = args.sockets + 50
        for n, address in enumerate(HOSTS, 1):
            hosts.append(start_tidings(workdir / f"host{n}", per_host, workers=args.workers,
                                       extra=shared, port=port, host=address, migrate=False))
        print(f"hosts up: {', '.join(h.url for h in hosts)}", flush=True)
        nginx = Nginx(workdir / "nginx", [f"{address}:{port}" for address in HOSTS])
        print(f"nginx on {nginx.url}", flush=True)
        uids = create_users(db_url, args.sockets)
        cookies = session_cookies(db_url, uids)
        specs = [Spec(i, uid, cookies[uid], (f"user:{uid}", "broadcast", "role:user"))
                 for i, uid in enumerate(uids)]
        host_of: dict[str, int] = {}
        clients = Clients(nginx.url.replace("http://", "ws://") + "/ws", nginx.url)
        conn = clients.connect(specs)
        print(f"connected {conn['connected']}/{args.sockets} through nginx in "
              f"{conn['seconds']:.1f}s, failed {conn['failed']} {conn['errors'][:2]}", flush=True)
        clients.reconnecting(True)

        def host(worker: str) -> int:
            if worker not in host_of:
                host_of.update(_tags_by_host(hosts))
            return host_of.get(worker, 0)

        # Phase 1: latency, same host vs cross host.
        clients.reset()
        first = hosts[0].head() + 1
        sent = _publish_for(hosts[0], args.latency, args.rate, threading.Event())
        last = hosts[0].head()
        clients.wait_for(conn["connected"] * (last - first + 1), timeout=60, idle=5)
        rep = clients.report({"broadcast": list(range(first, last + 1))})
        spread = {n: 0 for n in range(1, len(HOSTS) + 1)}
        for worker, count in rep["workers"].items():
            spread[host(worker)] = spread.get(host(worker), 0) + count
        same: list[float] = []
        cross: list[float] = []
        for worker, values in rep["lat_by_worker"].items():
            (same if host(worker) == 1 else cross).extend(values)
        latency = {"published": sent, "lost": rep["lost"], "dup": rep["dup"],
                   "same_host": _percentiles(same), "cross_host": _percentiles(cross),
                   "sockets_per_host": spread}
        print(f"latency: same host {latency['same_host']}, cross host {latency['cross_host']}, "
              f"lost {rep['lost']}, sockets per host {spread}", flush=True)

        # Phase 2: soak with host 3 killed a third of the way in.
        clients.reset()
        first = hosts[0].head() + 1
        stop = threading.Event()
        published: list[int] = []
        publisher = threading.Thread(
            target=lambda: published.append(_publish_for(hosts[0], args.soak, args.rate, stop)),
            daemon=True)
        publisher.start()
        time.sleep(args.soak / 3)
        victim = hosts[2]
        on_victim = sum(c for w, c in clients.workers().items() if host(w) == 3)
        t_kill = time.time()
        os.killpg(victim.pid, signal.SIGKILL)
        victim.process.wait(timeout=10)
        print(f"killed host 3 ({on_victim} sockets on it)", flush=True)
        back_at = None
        while publisher.is_alive():
            if back_at is None and clients.readiness(t_kill)["ready"] >= on_victim:
                back_at = time.time()  # every socket of the dead host is subscribed elsewhere
            time.sleep(0.5)
        publisher.join()
        last = hosts[0].head()
        expected = list(range(first, last + 1))
        clients.wait_for(conn["connected"] * len(expected), timeout=120, idle=10)
        rep = clients.report({"broadcast": expected})
        moved = {n: 0 for n in range(1, len(HOSTS) + 1)}
        for worker, count in rep["workers"].items():
            moved[host(worker)] = moved.get(host(worker), 0) + count
        soak = {"seconds": args.soak, "published": len(expected), "lost": rep["lost"],
                "dup": rep["dup"], "killed_host_sockets": on_victim,
                "all_back_after_kill_s": (back_at - t_kill) if back_at else None,
                "sockets_per_host_after": moved, "close_codes": rep["close_codes"],
                **{k: v for k, v in _percentiles(rep["lat"]).items() if k != "n"}}
        print(f"soak: {soak}", flush=True)
        result = {"stamp": stamp, "sockets": args.sockets, "connected": conn["connected"],
                  "workers_per_host": args.workers, "broker": args.broker, "rate": args.rate,
                  "latency": latency, "soak": soak, "seconds": round(time.time() - started, 1),
                  "load": os.getloadavg(),
                  "command": "python -m bench.multihost " + " ".join(
                      sys.argv[1:] if argv is None else argv)}
        (RESULTS / f"multihost-{stamp}.json").write_text(json.dumps(result, indent=1))
        write_multihost(result)
        return 0 if soak["lost"] == 0 and latency["lost"] == 0 else 1
    finally:
        if clients is not None:
            clients.close()
        if nginx is not None:
            nginx.stop()
        for server in hosts:
            server.stop()
        drop_database()
        if stop_redis is not None:
            stop_redis()


if __name__ == "__main__":
    raise SystemExit(main())
