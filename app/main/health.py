"""The health report behind ``GET /healthz``."""

from __future__ import annotations

import hmac
import ipaddress
import os
from typing import Any

from flask import current_app, request
from flask_login import current_user
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db


def database_status() -> str:
    """``"ok"`` if a trivial query succeeds, otherwise the error's class name."""
    try:
        db.session.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not healthy"; the class name tells which kind
        db.session.rollback()
        return f"error: {type(exc).__name__}"
    return "ok"


def health_report() -> dict[str, Any]:
    """Build the health report for this process.

    ``pid`` tells which gunicorn worker answered. Extensions that want to report their state
    (for example ``app.extensions["realtime"]``) may expose a ``health()`` method returning a
    dict; its keys are merged in, so this function needs no change when they arrive.
    """
    report: dict[str, Any] = {"status": "ok", "pid": os.getpid(), "database": database_status()}
    realtime = current_app.extensions.get("realtime")
    health = getattr(realtime, "health", None)
    if callable(health):
        report.update(health())
    if report["database"] != "ok":
        report["status"] = "degraded"
    return report


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def may_see_details() -> bool:
    """Who may read the full report (host, pid, socket counts, broker state).

    A monitor with ``HEALTHZ_TOKEN`` as a bearer token; without a token configured, a client
    on this host talking to gunicorn directly (the same rule as ``/metrics``: a proxy on this
    host gives itself away by its forwarding headers); and logged-in admins. Everyone else
    learns only whether the site is up: pids and counts help an attacker time their attempts.
    """
    token = current_app.config.get("HEALTHZ_TOKEN")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), str(token).encode()):
            return True
    else:
        proxied = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
        if _is_loopback(request.remote_addr) and not proxied:
            return True
    try:
        return bool(current_user.is_authenticated and current_user.is_admin)
    except SQLAlchemyError:
        db.session.rollback()  # the database is down: the report says so, not a 500
        return False
