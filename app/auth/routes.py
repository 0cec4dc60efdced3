"""Auth views: register, log in (throttled), log out."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from app.auth import bp, throttle
from app.auth.forms import LoginForm, RegistrationForm
from app.auth.redirects import is_safe_next
from app.extensions import db, realtime
from app.models import User

#: Shown for unknown usernames and wrong passwords alike, so the form does not reveal who has an account.
INVALID_CREDENTIALS = "Invalid username or password."

# Checked against when the username does not exist, so a miss costs as much time as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


@bp.route("/register", methods=["GET", "POST"])
def register():
    if current_user.is_authenticated:
        return redirect(url_for("main.dashboard"))
    form = RegistrationForm()
    if form.validate_on_submit():
        user = User(username=form.username.data.strip(), role="user")
        user.set_password(form.password.data)
        db.session.add(user)
        try:
            db.session.commit()
        except IntegrityError:
            # Someone registered the same name between our check and the insert.
            db.session.rollback()
            form.username.errors.append("That username is already taken.")
        else:
            from app.notifications.demo import welcome  # late: notifications imports auth helpers

            welcome(user)
            flash("Your account has been created. Please log in.", "success")
            return redirect(url_for("auth.login"))
    return render_template("auth/register.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = request.args.get("next")
    if current_user.is_authenticated:
        return redirect(next_url if is_safe_next(next_url) else url_for("main.dashboard"))

    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        username = form.username.data.strip()
        address = request.remote_addr
        lockout = throttle.check_lockout(username, address)
        if lockout:
            form.form_errors.append(
                f"Too many login attempts. Try again in {lockout.minutes} minutes."
            )
            return render_template("auth/login.html", form=form), 429, {
                "Retry-After": str(lockout.retry_after_seconds)
            }

        user = db.session.scalar(select(User).where(User.username == username))
        if user is None:
            check_password_hash(_DUMMY_HASH, form.password.data)  # same cost as a real check
            valid = False
        else:
            valid = user.check_password(form.password.data)
        if not valid:
            throttle.record_failure(username, address)
            form.form_errors.append(INVALID_CREDENTIALS)
        elif not user.is_active:
            form.form_errors.append("This account has been disabled.")
            status = 403
        else:
            throttle.clear_failures(username)
            # A fresh session on login defeats session fixation: nothing from before survives.
            session.clear()
            login_user(user, remember=form.remember.data)
            flash(f"Welcome back, {user.username}.", "success")
            return redirect(next_url if is_safe_next(next_url) else url_for("main.dashboard"))
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    # POST only (with the CSRF token) so another site cannot log people out with an <img> tag.
    # Sessions are signed cookies: bump the version so copies of this one die too.
    current_user.end_sessions()
    db.session.commit()
    # Open sockets keep the session they were opened with, so close them in every worker. After
    # the commit: a handshake that reads the session from now on is refused, and one that read
    # it before is closed by this (the realtime layer remembers when it arrived).
    realtime.disconnect_user(current_user, reason="signed out")
    logout_user()
    session.clear()
    flash("You have been logged out.", "info")
    return redirect(url_for("auth.login"))
