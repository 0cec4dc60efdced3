"""Views of the main area."""

from __future__ import annotations

from flask import current_app, jsonify, render_template, send_from_directory
from flask_login import current_user

from app.main import bp
from app.main.health import health_report, may_see_details


@bp.route("/")
def dashboard():
    # A first visit deserves to learn what the site is, not a "please log in" notice.
    if not current_user.is_authenticated:
        return render_template("main/landing.html")
    return render_template("dashboard.html")


@bp.route("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico on every site whatever the page says; answer with the icon
    itself (an SVG, which every current browser draws) rather than a 404 per visit."""
    response = send_from_directory(current_app.static_folder, "favicon.svg",
                                   mimetype="image/svg+xml", max_age=7 * 24 * 3600)
    return response


@bp.route("/healthz")
def healthz():
    report = health_report()
    code = 200 if report["status"] == "ok" else 503
    if not may_see_details():
        return jsonify({"status": report["status"]}), code
    return jsonify(report), code
