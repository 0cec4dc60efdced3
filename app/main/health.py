"""The health report behind ``GET /healthz``."""

from __future__ import annotations

import os
from typing import Any

from flask import current_app
from sqlalchemy import text

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
