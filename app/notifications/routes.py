"""Inbox, mark-read, preferences and banner dismissal, plus the bell and banners' template data."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.auth.redirects import is_safe_next
from app.errors import wants_json
from app.extensions import db
from app.notifications import announcements, bp, service
from app.notifications.models import KINDS

#: Banners shown at once; more wait behind "+N more" so the page itself stays in view.
BANNER_CAP = 2

#: Labels for the preferences page.
KIND_LABELS = {
    "welcome": "Welcome messages",
    "mention": "Mentions in chat",
    "dm": "Direct messages",
    "announcement": "Announcements",
    "system": "System messages",
}


@bp.app_context_processor
def bell_and_banners() -> dict[str, Any]:
    """Lazy helpers for base.html: queried only when a logged-in page renders them."""

    def notification_summary() -> dict[str, Any]:
        if not current_user.is_authenticated:
            return {"unread": 0, "latest": [], "toast_kinds": ""}
        prefs = service.preferences(current_user)
        return {
            "unread": service.unread_count(current_user),
            "latest": service.latest(current_user),
            "toast_kinds": " ".join(kind for kind, on in prefs.items() if on),
        }

    def active_announcements() -> list:
        """Critical first, then newest: the ones that matter most get the visible slots."""
        if not current_user.is_authenticated:
            return []
        return sorted(announcements.active_for(current_user),
                      key=lambda a: (a.level != "critical", -a.id))

    def announcement_history() -> list:
        if not current_user.is_authenticated:
            return []
        return announcements.history_for(current_user)

    return {"notification_summary": notification_summary,
            "active_announcements": active_announcements,
            "announcement_history": announcement_history,
            "banner_cap": BANNER_CAP}


def _back(default: str):
    target = request.form.get("next") or request.args.get("next")
    return redirect(target if is_safe_next(target) else default)


#: Pages past this are refused: offsets beyond it overflow the database's integers.
MAX_PAGE = 100_000


def _page_number() -> int:
    raw = request.args.get("page", "1")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 1 <= int(raw) <= MAX_PAGE:
        abort(400, f"page is a page number from 1 to {MAX_PAGE}.")
    return int(raw)


@bp.route("/notifications")
@login_required
def inbox():
    show = "unread" if request.args.get("filter") == "unread" else "all"
    page = db.paginate(
        service.inbox_query(current_user, unread_only=show == "unread"),
        page=_page_number(),
        per_page=service.PAGE_SIZE,
        error_out=False,
    )
    return render_template("notifications/inbox.html", page=page, show=show,
                           unread=service.unread_count(current_user))


@bp.post("/notifications/<int:notification_id>/read")
@login_required
def mark_one_read(notification_id: int):
    try:
        service.mark_read(current_user, [notification_id])
    except service.NotFound:
        abort(404)
    if wants_json():
        return jsonify({"ids": [notification_id], "unread": service.unread_count(current_user)})
    return _back(url_for("notifications.inbox"))


@bp.post("/notifications/read-all")
@login_required
def mark_everything_read():
    changed = service.mark_all_read(current_user)
    if wants_json():
        return jsonify({"all": True, "changed": changed, "unread": 0})
    flash("All notifications marked read.", "success")
    return _back(url_for("notifications.inbox"))


@bp.route("/notifications/preferences", methods=["GET", "POST"])
@login_required
def preferences():
    if request.method == "POST":
        # CSRFProtect has already refused a POST without a valid token.
        service.set_preferences(
            current_user, {kind: request.form.get(f"toast_{kind}") == "on" for kind in KINDS}
        )
        flash("Preferences saved.", "success")
        return redirect(url_for("notifications.preferences"))
    # Announcements never toast (their banner is their one surface): nothing to choose there.
    prefs = {kind: on for kind, on in service.preferences(current_user).items()
             if kind != "announcement"}
    return render_template("notifications/preferences.html", prefs=prefs, labels=KIND_LABELS)


@bp.post("/announcements/<int:announcement_id>/dismiss")
@login_required
def dismiss_announcement(announcement_id: int):
    try:
        announcements.dismiss(current_user, announcement_id)
    except service.NotFound:
        abort(404)
    if wants_json():
        return jsonify({"id": announcement_id, "dismissed": True})
    return _back(url_for("main.dashboard"))
