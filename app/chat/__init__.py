"""The chat panel and page: rooms, direct messages, presence and typing."""

from flask import Blueprint

bp = Blueprint("chat", __name__, url_prefix="/chat")

# Imported for their side effects: routes on ``bp``, socket handlers and the room authorizer on
# ``realtime``. They import ``bp`` from here, so they come after it.
from app.chat import models, realtime_handlers, routes  # noqa: E402, F401
