"""The live side of the dashboard: who may follow ``ops:cluster``, the push every interval, and
the last minute it remembers (delivery times from the broker, counters from each report)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.blueprints import BlueprintSetupState

from app.extensions import db, realtime
from app.ops import bp
from app.ops.figures import dashboard_view
from app.ops.window import OpsWindow, payload_timestamp
from flask_tidings import Identity
from flask_tidings.cluster import ClusterReporter

#: The one stream the dashboard follows (streams are ``prefix:id``).
STREAM = "ops:cluster"
#: The ephemeral event type carrying the dashboard's figures.
EVENT = "ops.stats"


def ops_window(app: Flask) -> OpsWindow:
    """This app's memory of the last minute (created with the blueprint)."""
    return app.extensions["ops"]


@realtime.authorizer("ops")
def can_watch(identity: Identity, name: str) -> bool:
    """Only admins see the operations figures (they name every user online)."""
    return name == "cluster" and "admin" in identity.roles


@realtime.listener
def time_delivery(state: Any, message: dict[str, Any]) -> None:
    """Runs in every worker right after it fanned a broker message out to its sockets."""
    if message.get("k") != "event":
        return
    window = state.app.extensions.get("ops")
    published_at = payload_timestamp(str(message.get("payload") or ""))
    if window is not None and published_at is not None:
        window.delivery.record(published_at)


def record_and_push(reporter: ClusterReporter) -> None:
    """Once per interval in every worker: remember the counters; push the view to watchers.

    Each worker holds every worker's figures, so each serves only its own sockets (one copy per
    admin tab, not one per worker), and skips the database entirely while nobody watches.
    """
    app: Flask = reporter.state.app
    aggregate = reporter.aggregate()
    window = ops_window(app)
    window.counters.add(aggregate["workers"])
    if not reporter.has_local_followers(STREAM):
        return
    with app.app_context():
        try:
            view = dashboard_view(aggregate, window, chart=False)
        finally:
            db.session.remove()
    reporter.push_local(STREAM, EVENT, view)


@bp.record_once
def _install(setup: BlueprintSetupState) -> None:
    setup.app.extensions.setdefault("ops", OpsWindow())
    setup.app.extensions["realtime"].cluster.on_tick(record_and_push)
