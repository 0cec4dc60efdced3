"""The operations dashboard at ``/admin/ops``: server-rendered, then live over ``ops:cluster``."""

from __future__ import annotations

from flask import current_app, jsonify, render_template
from flask.typing import ResponseReturnValue

from app.auth.decorators import admin_required
from app.extensions import realtime
from app.ops import bp
from app.ops.figures import dashboard_view
from app.ops.streams import EVENT, STREAM, ops_window


def current_view() -> dict:
    return dashboard_view(realtime.cluster_stats(),
                          ops_window(current_app))


@bp.route("/admin/ops")
@admin_required
def dashboard() -> ResponseReturnValue:
    return render_template("ops/dashboard.html", view=current_view(), stream=STREAM, event=EVENT)


@bp.route("/admin/ops/stats")
@admin_required
def stats() -> ResponseReturnValue:
    """The same figures as JSON, for scripts and for the page when its socket is down."""
    return jsonify(current_view())
