"""The live side of the dashboard: who may follow ``ops:cluster``, and the push every interval."""

from __future__ import annotations

from flask import Flask
from flask.blueprints import BlueprintSetupState

from app.extensions import db, realtime
from app.ops import bp
from app.ops.figures import dashboard_view
from flask_tidings import Identity
from flask_tidings.cluster import ClusterReporter

#: The one stream the dashboard follows (streams are ``prefix:id``).
STREAM = "ops:cluster"
#: The ephemeral event type carrying the dashboard's figures.
EVENT = "ops.stats"


@realtime.authorizer("ops")
def can_watch(identity: Identity, name: str) -> bool:
    """Only admins see the operations figures (they name every user online)."""
    return name == "cluster" and "admin" in identity.roles


def push_dashboard(reporter: ClusterReporter) -> None:
    """Send this worker's view of the cluster to this worker's admins watching the dashboard.

    Runs on the cluster reporter's thread once per interval in every worker. Each worker holds
    every worker's figures, so each serves only its own sockets (one copy per admin tab, not
    one per worker), and skips the database entirely while nobody watches.
    """
    if not reporter.has_local_followers(STREAM):
        return
    app: Flask = reporter.state.app
    with app.app_context():
        try:
            view = dashboard_view(reporter.aggregate())
        finally:
            db.session.remove()
    reporter.push_local(STREAM, EVENT, view)


@bp.record_once
def _install(setup: BlueprintSetupState) -> None:
    setup.app.extensions["realtime"].cluster.on_tick(push_dashboard)
