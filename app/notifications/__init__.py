"""Per-user notifications: the inbox, the bell, preferences, and ``flask notify``."""

from flask import Blueprint

# cli_group=None: the commands read ``flask notify ...`` and ``flask broadcast ...``.
bp = Blueprint("notifications", __name__, cli_group=None)

# They attach views, commands and socket handlers to bp and realtime at import time.
from app.notifications import (  # noqa: E402,F401
    cli,
    models,
    realtime_handlers,
    routes,
    targets,
)
