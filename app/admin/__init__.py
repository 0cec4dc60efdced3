"""The admin area; announcements and operations pages will live here."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

from app.admin import announcements, routes  # noqa: E402,F401  (they attach to bp)
