"""Accounts: register, log in, log out."""

from flask import Blueprint

bp = Blueprint("auth", __name__, url_prefix="/auth")

from app.auth import routes  # noqa: E402,F401  (routes attach themselves to bp)
