"""The admin area; announcements and operations pages will live here."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

from app.admin import routes  # noqa: E402,F401  (routes attach themselves to bp)
