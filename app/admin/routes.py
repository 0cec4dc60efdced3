"""Admin views, all behind ``admin_required``."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from app.admin import bp
from app.auth.decorators import admin_required
from app.extensions import db, realtime
from app.models import User


@bp.route("/")
@admin_required
def index():
    user_count = db.session.scalar(select(func.count()).select_from(User))
    return render_template("admin/index.html", user_count=user_count)


@bp.route("/users")
@admin_required
def users():
    accounts = db.session.scalars(select(User).order_by(User.username)).all()
    return render_template("admin/users.html", accounts=accounts)


@bp.post("/users/<int:user_id>/active")
@admin_required
def set_active(user_id: int):
    user = db.get_or_404(User, user_id)
    if user.id == current_user.id:
        flash("You cannot deactivate your own account.", "error")
        return redirect(url_for("admin.users"))
    user.active = request.form.get("active") == "1"
    if not user.active:
        user.end_sessions()
    db.session.commit()
    if not user.active:
        # Their open sockets were authenticated at the handshake: close them now, in every
        # worker, rather than letting them listen until the next reconnect.
        realtime.disconnect_user(user, reason="account deactivated")
    flash(f"{user.username} is now {'active' if user.active else 'deactivated'}.", "success")
    return redirect(url_for("admin.users"))
