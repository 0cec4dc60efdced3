"""Admin pages for composing announcements and reading their delivery figures."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import IntegerField, RadioField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from app.admin import bp
from app.auth.decorators import admin_required
from app.models import ROLES
from app.notifications import announcements
from app.notifications.models import LEVELS

try:  # WTForms 3.3 deprecates (value, label) tuples in favour of SelectChoice.
    from wtforms import SelectChoice as _Choice
except ImportError:  # older WTForms: plain tuples
    def _Choice(value: str, label: str) -> tuple[str, str]:  # noqa: N802
        return (value, label)


class AnnouncementForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=200)])
    body = TextAreaField("Message", validators=[Optional(), Length(max=5000)])
    level = SelectField("Level", choices=[_Choice(level, level.capitalize()) for level in LEVELS],
                        default="info")
    audience = RadioField("Audience", default="all", choices=[
        _Choice("all", "Everyone"), _Choice("role", "Everyone with a role"),
        _Choice("users", "Chosen users"),
    ])
    role = SelectField("Role", choices=[_Choice(role, role) for role in ROLES], default="user")
    usernames = StringField("Usernames (comma-separated)", validators=[Optional(),
                                                                        Length(max=2000)])
    expires_minutes = IntegerField("Expires after (minutes, optional)",
                                   validators=[Optional(), NumberRange(min=1, max=525600)])
    submit = SubmitField("Publish")


@bp.route("/announcements", methods=["GET", "POST"])
@admin_required
def announcements_page():
    form = AnnouncementForm()
    if form.validate_on_submit():
        chosen = []
        if form.audience.data == "users":
            chosen, unknown = announcements.parse_usernames(form.usernames.data or "")
            if unknown:
                form.usernames.errors.append(f"Unknown users: {', '.join(unknown)}")
            elif not chosen:
                form.usernames.errors.append("Name at least one user.")
        if not form.usernames.errors:
            announcement = announcements.publish(
                current_user,
                form.title.data,
                form.body.data or "",
                level=form.level.data,
                audience=form.audience.data,
                role=form.role.data,
                users=chosen,
                expires_at=announcements.expires_in(form.expires_minutes.data),
            )
            flash(f"Announcement sent to {announcement.recipients} account(s).", "success")
            return redirect(url_for("admin.announcements_page"))
    return render_template("admin/announcements.html", form=form,
                           history=announcements.history(), is_active=announcements.is_active)
