"""Tidings under test: the real site plus a token-guarded endpoint that publishes inside a worker.

With one worker and no Redis the broker is in-process, so a publisher outside the server could
not reach its sockets; publishing through ``realtime.broadcast``/``notify`` from a request in the
worker is the real path an app's view takes. Run as ``gunicorn -c gunicorn.conf.py bench.server:app``.
"""

from __future__ import annotations

import os
import random
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request

from app import create_app
from app.extensions import csrf, realtime

#: Requests without ``X-Bench-Token: $BENCH_TOKEN`` get 404, so this module is inert without it.
TOKEN = os.environ.get("BENCH_TOKEN", "")
#: Bounds on one request, so a typo cannot wedge the server under test.
MAX_COUNT = 20_000
MAX_SIZE = 1 << 20

bp = Blueprint("bench", __name__, url_prefix="/bench")


@bp.before_request
def guard() -> None:
    if not TOKEN or request.headers.get("X-Bench-Token") != TOKEN:
        abort(404)


def _count_and_pad(body: dict[str, Any]) -> tuple[int, str]:
    count = max(0, min(int(body.get("n", 1)), MAX_COUNT))
    return count, "x" * max(0, min(int(body.get("size", 0)), MAX_SIZE))


@bp.post("/broadcast")
def broadcast() -> Any:
    """``{"n": k, "size": bytes}``: k broadcasts, one after the other, as fast as they are stored."""
    count, pad = _count_and_pad(request.get_json(force=True))
    ids = [realtime.broadcast("bench", {"i": i, "pad": pad})[0].seq for i in range(count)]
    return jsonify(ids=ids)


@bp.post("/notify")
def notify() -> Any:
    """``{"n": k, "size": b, "users": [ids]}`` (round robin) or ``"random": [lo, hi]``."""
    body = request.get_json(force=True)
    count, pad = _count_and_pad(body)
    users = [int(u) for u in body.get("users") or []]
    low, high = body.get("random") or (0, 0)
    sent = []
    for i in range(count):
        user = users[i % len(users)] if users else random.randint(int(low), int(high))
        sent.append([user, realtime.notify(user, "bench", {"i": i, "pad": pad}).seq])
    return jsonify(sent=sent)


@bp.get("/head")
def head() -> Any:
    stream = request.args.get("stream", "broadcast")
    return jsonify(head=current_app.extensions["realtime"].store.head(stream))


app = create_app()
csrf.exempt(bp)
app.register_blueprint(bp)
