"""Tidings realtime: live streams for a Flask site over flask-sock, under threaded gunicorn.

A self-contained extension (no import from the site's views)::

    realtime = Realtime()
    realtime.init_app(app)
    realtime.notify(user, "notification", {"title": "Hello"})

See PROTOCOL.md (beside this module) for the wire protocol and README.md for settings.
"""

from .connection import Connection, Identity
from .extension import (
    Realtime,
    RealtimeError,
    RealtimeState,
    check_key,
    shutdown_all,
    user_stream,
)
from .store import Event, PublishTimeout, metadata

__all__ = [
    "Connection",
    "Event",
    "Identity",
    "PublishTimeout",
    "Realtime",
    "RealtimeError",
    "RealtimeState",
    "check_key",
    "metadata",
    "shutdown_all",
    "user_stream",
]
