"""The logged-in home page and the health check."""

from flask import Blueprint

bp = Blueprint("main", __name__)

from app.main import routes  # noqa: E402,F401  (routes attach themselves to bp)
from app.main.health import health_report  # noqa: E402,F401
