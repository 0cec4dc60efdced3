"""The dashboard's view of the cluster: the realtime aggregate plus names and announcement reach.

The realtime layer only knows user ids; names and announcements come from the site's database,
so they are resolved here, on the server, before anything reaches a browser.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import select

from app.extensions import db
from app.models import User

#: Usernames shown in the "online" list at most; the count is always exact (up to the cap of
#: ids a worker reports).
MAX_LISTED_USERS = 200
#: Recent announcements whose live reach is shown.
RECENT_ANNOUNCEMENTS = 5


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


def dashboard_view(aggregate: dict[str, Any]) -> dict[str, Any]:
    """Everything the page shows, JSON-ready: rendered by Jinja first, then pushed each interval."""
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
    return {
        "at": aggregate["at"],
        "interval": aggregate["interval"],
        "served_by": aggregate["worker"],
        "totals": aggregate["totals"],
        "broker": aggregate["broker"],
        "users": usernames(aggregate["users"]),
        "users_truncated": aggregate["users_truncated"]
        or len(aggregate["users"]) > MAX_LISTED_USERS,
        "workers": workers,
        "announcements": recent_announcements(),
    }
