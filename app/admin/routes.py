"""Admin views, all behind ``admin_required``."""

from __future__ import annotations

from flask import render_template
from sqlalchemy import func, select

from app.admin import bp
from app.auth.decorators import admin_required
from app.extensions import db
from app.models import User


@bp.route("/")
@admin_required
def index():
    user_count = db.session.scalar(select(func.count()).select_from(User))
    return render_template("admin/index.html", user_count=user_count)
