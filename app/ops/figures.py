"""The dashboard's view of the cluster: the realtime aggregate plus names and announcement reach,
and the plain-language summary an admin reads first.

The realtime layer only knows user ids; names and announcements come from the site's database,
so they are resolved here, on the server, before anything reaches a browser. The summary answers
one question: are messages arriving quickly, for how many people, and are there any errors?
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import select

from app.extensions import db
from app.models import User
from app.ops.window import OpsWindow

#: Usernames shown in the "online" list at most; the count is always exact (up to the cap of
#: ids a worker reports).
MAX_LISTED_USERS = 200
#: Recent announcements whose live reach is shown.
RECENT_ANNOUNCEMENTS = 5
#: A 95th-percentile delivery time above this needs the admin's attention.
SLOW_P95_MS = 1000.0
#: Relay (broker) states in which messages flow between server processes.
RELAY_OK = ("connected", "idle")


def usernames(user_ids: list[str]) -> list[str]:
    """Sorted usernames for the given ids (ids that are not numbers, or gone, are skipped)."""
    ids = sorted({int(uid) for uid in user_ids if str(uid).isdigit()})[:MAX_LISTED_USERS]
    if not ids:
        return []
    return sorted(db.session.scalars(select(User.username).where(User.id.in_(ids))).all())


def _announcement_model() -> Any:
    """The announcements area's model, if it exists and records ``live_reached``.

    Found by its column rather than imported, so this page works before (and whatever shape)
    the announcements area lands.
    """
    for mapper in db.Model.registry.mappers:
        if "live_reached" in mapper.columns:
            return mapper.class_
    return None


def recent_announcements(limit: int = RECENT_ANNOUNCEMENTS) -> list[dict[str, Any]]:
    """The last announcements with how many people the live push reached, of how many."""
    model = _announcement_model()
    if model is None:
        return []
    order = getattr(model, "created_at", None) or model.id
    try:
        rows = db.session.scalars(select(model).order_by(order.desc()).limit(limit)).all()
    except Exception:
        # The table may not be migrated yet on this database; the dashboard still works.
        db.session.rollback()
        current_app.logger.warning("ops: could not read announcements", exc_info=True)
        return []
    return [
        {
            "id": getattr(row, "id", None),
            "title": str(getattr(row, "title", "") or ""),
            "live_reached": getattr(row, "live_reached", None),
            "recipients": getattr(row, "recipients", None),
        }
        for row in rows
    ]


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def summary(aggregate: dict[str, Any], window: OpsWindow | None) -> dict[str, Any]:
    """The four tiles and the one-line answer, from the aggregate and the last minute."""
    totals = aggregate["totals"]
    minute = window.counters.last_minute() if window else {
        "seconds": 0.0, "counts": {}, "per_second": {}}
    counts, rates = minute["counts"], minute["per_second"]
    delivery = window.delivery.summary() if window else {
        "count": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    errors = {
        "refused": int(counts.get("refused_capacity", 0)),
        "cut_off": int(counts.get("cut_offs", 0)),
        "server": int(counts.get("server_errors", 0)),
    }
    error_count = sum(errors.values())
    relay = str(aggregate["broker"].get("state", "unknown"))
    relay_ok = relay in RELAY_OK
    people = int(totals.get("users_online", 0))
    slow = delivery["p95_ms"] is not None and delivery["p95_ms"] > SLOW_P95_MS

    problems = []
    if error_count:
        problems.append(f"{_plural(error_count, 'error')} in the last minute")
    if not relay_ok:
        problems.append(f"the relay between server processes is {relay}")
    if slow:
        problems.append(f"slow delivery: 5% of messages took over {delivery['p95_ms']:,.0f} ms")
    if problems:
        headline = "Needs attention: " + "; ".join(problems) + "."
    elif delivery["count"]:
        headline = (f"All good: messages reach {_plural(people, 'person', 'people')} in "
                    f"{delivery['p50_ms']:,.0f} ms (95% within {delivery['p95_ms']:,.0f} ms); "
                    "no errors in the last minute.")
    else:
        headline = (f"All good: {_plural(people, 'person', 'people')} connected, no messages "
                    "and no errors in the last minute.")
    return {
        "status": "attention" if problems else "ok",
        "headline": headline,
        "people": people,
        "connections": int(totals.get("sockets", 0)),
        "processes": int(totals.get("workers", 0)),
        "window_s": minute["seconds"],
        "delivered_last_minute": int(counts.get("delivered_live", 0)),
        "delivered_per_s": float(rates.get("delivered_live", 0.0)),
        "sent_per_s": float(rates.get("published", 0.0)),
        "dropped_last_minute": int(counts.get("dead_peers", 0)),
        "delivery": delivery,
        "errors_last_minute": error_count,
        "errors": errors,
        "relay": relay,
        "relay_kind": str(aggregate["broker"].get("kind", "unknown")),
        "relay_ok": relay_ok,
    }


def dashboard_view(aggregate: dict[str, Any], window: OpsWindow | None = None,
                   chart: bool = True) -> dict[str, Any]:
    """Everything the page shows, JSON-ready: rendered by Jinja first, then pushed each interval.

    ``chart`` adds the last minutes of points (the page's first render and ``/stats``); each
    push carries only the newest one.
    """
    workers = []
    for row in aggregate["workers"]:
        rates = row.get("rates") or {}
        broker = row.get("broker") or {}
        workers.append({
            "worker": row["worker"],
            "sockets": row.get("sockets", 0),
            "capacity": row.get("capacity", 0),
            "users_online": row.get("users_online", 0),
            "accepting": bool(row.get("accepting", True)),
            "published_per_s": rates.get("published", 0.0),
            "delivered_per_s": rates.get("delivered_live", 0.0),
            "refused_capacity": row.get("refused_capacity", 0),
            "refused_auth": row.get("refused_auth", 0),
            "cut_offs": row.get("cut_offs", 0),
            "dead_peers": row.get("dead_peers", 0),
            "broker": broker.get("state", "unknown"),
            "lag_ms": broker.get("lag_ms"),
            "age_s": row.get("age_s", 0.0),
        })
    points = window.counters.chart() if window else []
    return {
        "at": aggregate["at"],
        "interval": aggregate["interval"],
        "served_by": aggregate["worker"],
        "summary": summary(aggregate, window),
        "chart": points if chart else None,
        "point": points[-1] if points else None,
        "totals": aggregate["totals"],
        "broker": aggregate["broker"],
        "users": usernames(aggregate["users"]),
        "users_truncated": aggregate["users_truncated"]
        or len(aggregate["users"]) > MAX_LISTED_USERS,
        "workers": workers,
        "announcements": recent_announcements(),
    }
