"""The baseline: the simplest flask-sock broadcast (a locked global list and a send loop).

No auth (``/ws?user=<id>``), no bounded queue, no heartbeats: exactly what a first attempt looks
like. Same bench endpoints and envelope shape as bench/server.py, so one load generator measures both.
Run as ``gunicorn -k gthread --threads 2N+50 bench.naive_app:app``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from flask import Flask, jsonify, request
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)
clients: dict[Any, str] = {}  # socket -> user id, in connection order
heads: dict[str, int] = {}
lock = threading.Lock()


@sock.route("/ws")
def websocket(ws: Any) -> None:
    with lock:
        clients[ws] = request.args.get("user", "0")
    try:
        while True:
            ws.receive()  # the baseline ignores what clients say
    except Exception:
        pass
    finally:
        with lock:
            clients.pop(ws, None)


def _publish(stream: str, targets: list[Any], i: int, pad: str) -> int:
    with lock:
        heads[stream] = seq = heads.get(stream, 0) + 1
    text = json.dumps({"type": "bench", "stream": stream, "id": seq, "ts": time.time(),
                       "data": {"i": i, "pad": pad}})
    for ws in targets:
        try:
            ws.send(text)
        except Exception:
            with lock:
                clients.pop(ws, None)
    return seq


@app.post("/bench/broadcast")
def broadcast() -> Any:
    body = request.get_json(force=True)
    pad = "x" * int(body.get("size", 0))
    ids = []
    for i in range(int(body.get("n", 1))):
        with lock:
            targets = list(clients)
        ids.append(_publish("broadcast", targets, i, pad))
    return jsonify(ids=ids)


@app.post("/bench/notify")
def notify() -> Any:
    body = request.get_json(force=True)
    pad = "x" * int(body.get("size", 0))
    users = [str(u) for u in body["users"]]
    sent = []
    for i in range(int(body.get("n", 1))):
        user = users[i % len(users)]
        with lock:
            targets = [ws for ws, owner in clients.items() if owner == user]
        sent.append([int(user), _publish(f"user:{user}", targets, i, pad)])
    return jsonify(sent=sent)


@app.get("/bench/head")
def head() -> Any:
    return jsonify(head=heads.get(request.args.get("stream", "broadcast"), 0))


@app.get("/healthz")
def healthz() -> Any:
    return jsonify(ok=True, sockets=len(clients))
