"""Auth views: register, log in (throttled), log out, reset a forgotten password."""

from __future__ import annotations

import logging

from flask import (
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import generate_password_hash

from app import passwords
from app.auth import bp, reset, throttle
from app.auth.forms import (
    PASSWORD_HINT,
    LoginForm,
    RegistrationForm,
    ResetPasswordForm,
    ResetRequestForm,
)
from app.auth.mail import send_mail
from app.auth.redirects import is_safe_next
from app.extensions import db, realtime
from app.models import User, utcnow

log = logging.getLogger("tidings.auth")

#: Shown for unknown usernames, wrong passwords and disabled accounts alike, so the form does
#: not reveal who has an account or whose account was disabled.
INVALID_CREDENTIALS = "Invalid username or password."

#: Shown after a reset request whatever was typed, so the page reveals no account or address.
RESET_SENT = ("If that account exists and has an email address, a link to choose a new password "
              "is on its way. It works once, for an hour.")

# Checked against when the username does not exist, so a miss costs as much time as a wrong
# password.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def _start_session(user: User, remember: bool = False) -> str:
    """Log ``user`` in on a fresh session; return the greeting for their first or later visit."""
    greeting = "Welcome back" if user.last_login_at else "Welcome"
    # A fresh session on login defeats session fixation: nothing from before survives.
    session.clear()
    login_user(user, remember=remember)
    user.last_login_at = utcnow()
    db.session.commit()
    return f"{greeting}, {user.username}."


@bp.route("/register", methods=["GET", "POST"])
def register():
    if current_user.is_authenticated:
        return redirect(url_for("main.dashboard"))
    form = RegistrationForm()
    if form.validate_on_submit():
        counted = throttle.claim(throttle.signup_rule("register", request.remote_addr))
        if isinstance(counted, throttle.Refusal):
            form.form_errors.append(counted.message())
            return (render_template("auth/register.html", form=form, password_hint=PASSWORD_HINT),
                    429, counted.headers())
        user = User(username=form.username.data.strip(), email=form.email.data or None,
                    role="user")
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
            flash(_start_session(user) + " Your account is ready.", "success")
            response = make_response(redirect(url_for("main.dashboard")))
            throttle.remember_browser(response, user.username)
            return response
    return render_template("auth/register.html", form=form, password_hint=PASSWORD_HINT)


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = request.args.get("next")
    if current_user.is_authenticated:
        return redirect(next_url if is_safe_next(next_url) else url_for("main.dashboard"))

    form = LoginForm()
    if form.validate_on_submit():
        username = form.username.data.strip()
        # Counted before the password is checked, so parallel guesses cannot all slip through.
        attempt = throttle.claim(throttle.login_rules(
            username, request.remote_addr, known=throttle.is_known_browser(username)))
        if isinstance(attempt, throttle.Refusal):
            form.form_errors.append(attempt.message())
            return render_template("auth/login.html", form=form), 429, attempt.headers()

        user = db.session.scalar(select(User).where(User.username == username))
        if user is None:
            passwords.check_password(_DUMMY_HASH, form.password.data)  # same cost as a real one
            valid = False
        else:
            valid = user.check_password(form.password.data)
        # A disabled account gets the wrong-password answer even for the right password: the
        # form must not confirm that the password was right, nor that the account exists.
        if valid and user.is_active:
            throttle.forgive(attempt, username)
            flash(_start_session(user, remember=form.remember.data), "success")
            response = make_response(
                redirect(next_url if is_safe_next(next_url) else url_for("main.dashboard")))
            throttle.remember_browser(response, user.username)
            return response
        form.form_errors.append(INVALID_CREDENTIALS)
        warn_at = int(current_app.config["LOGIN_WARN_WHEN_ATTEMPTS_LEFT"])
        left = attempt.attempts_left
        if left is not None and left <= warn_at:
            form.form_errors.append(
                "No attempts left: logins from your address are paused for a while."
                if left <= 0 else
                f"{left} attempt{'s' if left != 1 else ''} left before logins from your address "
                "are paused for a while.")
    return render_template("auth/login.html", form=form)


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


@bp.route("/reset", methods=["GET", "POST"])
def reset_request():
    """Ask for a password reset link, by username or email address."""
    form = ResetRequestForm()
    if form.validate_on_submit():
        counted = throttle.claim(throttle.signup_rule("reset", request.remote_addr))
        if isinstance(counted, throttle.Refusal):
            form.form_errors.append(counted.message())
            return render_template("auth/reset_request.html", form=form), 429, counted.headers()
        given = form.login.data.strip()
        user = db.session.scalar(select(User).where(or_(
            User.username == given, func.lower(User.email) == given.lower())).limit(1))
        if user is not None and user.active and user.email:
            link = url_for("auth.reset_password", token=reset.make_token(user), _external=True)
            send_mail(user.email, "Reset your Tidings password", (
                f"Hello {user.username},\n\nSomeone (we hope you) asked to reset the password of "
                f"your Tidings account. Choose a new one here; the link works once, for an "
                f"hour:\n\n{link}\n\nIf it was not you, ignore this message: nothing changes."))
        flash(RESET_SENT, "info")
        return redirect(url_for("auth.login"))
    return render_template("auth/reset_request.html", form=form)


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    """Choose a new password from a reset link; ends every other session of the account."""
    user = reset.user_for_token(token)
    if user is None:
        flash("That reset link has expired or has already been used. Ask for a new one.", "info")
        return redirect(url_for("auth.reset_request"))
    form = ResetPasswordForm(user.username)
    if form.validate_on_submit():
        user.set_password(form.password.data)
        user.end_sessions()  # whoever knew the old password is logged out everywhere
        db.session.commit()
        realtime.disconnect_user(user, reason="password changed")
        log.info("password reset user=%s", user.id)
        flash(_start_session(user) + " Your new password is set.", "success")
        return redirect(url_for("main.dashboard"))
    return render_template("auth/reset_password.html", form=form, username=user.username,
                           password_hint=PASSWORD_HINT)
