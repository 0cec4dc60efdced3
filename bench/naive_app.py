"""The baseline: the simplest flask-sock broadcast (a locked global list and a send loop).

No auth (``/ws?user=<id>``), no bounded queue, no heartbeats: exactly what a first attempt looks
like. Same bench endpoints and envelope shape as bench/server.py, and the same handshake the load
generator speaks to every server (``welcome``, then ``subscribe`` answered by ``subscribed``), so
the connect rate is measured alike; broadcasts still go to every socket, as a first attempt does.
Run as ``gunicorn -k gthread --threads 2N+50 bench.naive_app:app``.
"""

from __future__ import annotations

import json
import os
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
    user = request.args.get("user", "0")
    with lock:
        clients[ws] = user
    ws.send(json.dumps({"type": "welcome", "conn": f"naive:{os.getpid()}", "user": user,
                        "streams": [f"user:{user}", "broadcast", "role:user"]}))
    try:
        while True:
            message = json.loads(ws.receive())
            if message.get("type") == "subscribe":  # answered; the fan-out ignores it
                # One stream, or several in one message (as realtime.js sends them).
                for entry in message.get("streams") or [message]:
                    stream = entry.get("stream")
                    with lock:
                        head = heads.get(stream, 0)
                    ws.send(json.dumps({"type": "subscribed", "stream": stream, "head": head,
                                        "after": head, "ref": message.get("ref")}))
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
