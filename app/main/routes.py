"""Views of the main area."""

from __future__ import annotations

from flask import jsonify, render_template
from flask_login import login_required

from app.main import bp
from app.main.health import health_report


@bp.route("/")
@login_required
def dashboard():
    return render_template("dashboard.html")


@bp.route("/healthz")
def healthz():
    report = health_report()
    return jsonify(report), 200 if report["status"] == "ok" else 503
