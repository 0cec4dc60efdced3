"""Operations: the live dashboard of the realtime layer and ``/metrics``."""

from flask import Blueprint

bp = Blueprint("ops", __name__)
