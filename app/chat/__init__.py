"""The chat panel and page: rooms, direct messages, presence and typing."""

from flask import Blueprint

bp = Blueprint("chat", __name__, url_prefix="/chat")
