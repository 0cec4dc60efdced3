"""Operations: the live dashboard of the realtime layer and ``/metrics``."""

from flask import Blueprint

bp = Blueprint("ops", __name__)

from app.ops import metrics, routes, streams  # noqa: E402,F401  (they attach to bp and realtime)
