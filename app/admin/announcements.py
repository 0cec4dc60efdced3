"""Admin pages for composing announcements, previewing them, changing them after they went out,
and reading their delivery figures."""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort, flash, jsonify, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import (
    HiddenField,
    IntegerField,
    RadioField,
    SelectField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from app.admin import bp
from app.auth.decorators import admin_required
from app.idempotency import new_key, request_key
from app.models import ROLES, User
from app.notifications import announcements
from app.notifications.models import LEVELS
from app.notifications.service import NotFound

try:  # WTForms 3.3 deprecates (value, label) tuples in favour of SelectChoice.
    from wtforms import SelectChoice as _Choice
except ImportError:  # older WTForms: plain tuples
    def _Choice(value: str, label: str) -> tuple[str, str]:  # noqa: N802
        return (value, label)

#: The value the confirmation button carries: "yes, critical, to everyone".
CONFIRM_CRITICAL_TO_ALL = "critical-all"


def _level_field() -> SelectField:
    return SelectField("Level", choices=[_Choice(level, level.capitalize()) for level in LEVELS],
                       default="info")


class AnnouncementForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=200)])
    body = TextAreaField("Message", validators=[Optional(), Length(max=5000)])
    level = _level_field()
    audience = RadioField("Audience", default="all", choices=[
        _Choice("all", "Everyone"), _Choice("role", "Everyone with a role"),
        _Choice("users", "Chosen users"),
    ])
    role = SelectField("Role", choices=[_Choice(role, role) for role in ROLES], default="user")
    usernames = StringField("Usernames (comma-separated)", validators=[Optional(),
                                                                        Length(max=2000)])
    expires_minutes = IntegerField("Expires after (minutes, optional)",
                                   validators=[Optional(), NumberRange(min=1, max=525600)])
    #: Set by the confirmation step's button; a critical banner to everyone needs it.
    confirmed = HiddenField()
    #: One key per rendered form: a double submit or a retry publishes once (app.idempotency).
    idempotency_key = HiddenField(default=new_key)
    preview = SubmitField("Preview")
    submit = SubmitField("Publish")


class AnnouncementEditForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=200)])
    body = TextAreaField("Message", validators=[Optional(), Length(max=5000)])
    level = _level_field()
    submit = SubmitField("Save and update open pages")


@dataclass
class Preview:
    """What the compose page shows before anything is sent."""

    title: str
    body: str
    level: str
    recipients: int
    #: A critical banner for everyone: the admin must confirm this one explicitly.
    needs_confirmation: bool


def _chosen_users(form: AnnouncementForm) -> list[User]:
    """The "Chosen users" of the form; names that match nobody become the field's error."""
    if form.audience.data != "users":
        return []
    chosen, unknown = announcements.parse_usernames(form.usernames.data or "")
    if unknown:
        form.usernames.errors.append(f"Unknown users: {', '.join(unknown)}")
    elif not chosen:
        form.usernames.errors.append("Name at least one user.")
    return chosen


def _history_page(form: AnnouncementForm, preview: Preview | None = None):
    return render_template("admin/announcements.html", form=form, preview=preview,
                           history=announcements.history(),
                           confirm_value=CONFIRM_CRITICAL_TO_ALL)


@bp.route("/announcements", methods=["GET", "POST"])
@admin_required
def announcements_page():
    form = AnnouncementForm()
    if not form.validate_on_submit():
        return _history_page(form)
    chosen = _chosen_users(form)
    if form.usernames.errors:
        return _history_page(form)
    critical_to_all = form.level.data == "critical" and form.audience.data == "all"
    confirmed = form.confirmed.data == CONFIRM_CRITICAL_TO_ALL
    if form.preview.data or (critical_to_all and not confirmed):
        # Nothing is sent yet: the admin sees the banner as its readers will, and how many.
        preview = Preview(
            title=(form.title.data or "").strip(), body=(form.body.data or "").strip(),
            level=form.level.data, needs_confirmation=critical_to_all,
            recipients=announcements.audience_size(form.audience.data, form.role.data, chosen),
        )
        return _history_page(form, preview)
    announcement = announcements.publish(
        current_user,
        form.title.data,
        form.body.data or "",
        level=form.level.data,
        audience=form.audience.data,
        role=form.role.data,
        users=chosen,
        expires_at=announcements.expires_in(form.expires_minutes.data),
        key=request_key("announcement"),
    )
    flash(f"Announcement sent to {announcement.recipients} account(s).", "success")
    return redirect(url_for("admin.announcements_page"))


@bp.get("/announcements/figures")
@admin_required
def announcement_figures():
    """The history's figures as JSON: the page syncs from here whenever its socket (re)joins,
    then follows the ephemeral ``announcement.figures`` pushes."""
    return jsonify({"announcements": [
        {"id": a.id, "recipients": a.recipients, "live_reached": a.live_reached,
         "dismissed": dismissed, "status": a.status()}
        for a, dismissed in announcements.history()
    ]})


def _announcement_or_404(announcement_id: int):
    try:
        return announcements.get(announcement_id)
    except NotFound:
        abort(404, "No such announcement.")


@bp.route("/announcements/<int:announcement_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_announcement(announcement_id: int):
    announcement = _announcement_or_404(announcement_id)
    if announcement.retracted_at is not None:
        flash("A retracted announcement cannot be edited.", "error")
        return redirect(url_for("admin.announcements_page"))
    form = AnnouncementEditForm(obj=announcement)
    if form.validate_on_submit():
        announcements.edit(announcement.id, form.title.data, form.body.data or "",
                           form.level.data)
        flash(f"“{announcement.title}” updated on every open page.", "success")
        return redirect(url_for("admin.announcements_page"))
    return render_template("admin/announcement_edit.html", form=form, announcement=announcement)


@bp.post("/announcements/<int:announcement_id>/end")
@admin_required
def end_announcement(announcement_id: int):
    announcement = announcements.end(_announcement_or_404(announcement_id).id)
    flash(f"“{announcement.title}” ended: its banner is gone from every page.", "success")
    return redirect(url_for("admin.announcements_page"))


@bp.post("/announcements/<int:announcement_id>/retract")
@admin_required
def retract_announcement(announcement_id: int):
    announcement = announcements.retract(_announcement_or_404(announcement_id).id)
    flash(f"“{announcement.title}” retracted: removed from every page and every history.",
          "success")
    return redirect(url_for("admin.announcements_page"))
