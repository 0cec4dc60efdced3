"""Error pages that answer JSON to API clients and HTML to browsers."""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError


def wants_json() -> bool:
    """True for ``/api/`` paths and for clients whose best Accept match is JSON."""
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(code: int, message: str):
    if wants_json():
        return jsonify({"error": {"code": code, "message": message}}), code
    return render_template("errors/error.html", code=code, message=message), code


def handle_http_exception(error: HTTPException):
    return error_response(error.code or 500, error.description or error.name)


def handle_csrf_error(error: CSRFError):
    # Usually an expired page or a missing cookie; telling the user to reload is the fix.
    return error_response(400, f"{error.description} Reload the page and try again.")


def handle_unexpected_error(error: Exception):
    # Flask passes the original exception wrapped in InternalServerError for unhandled errors.
    return error_response(500, InternalServerError.description)


def register_errorhandlers(app: Flask) -> None:
    app.register_error_handler(CSRFError, handle_csrf_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(InternalServerError, handle_unexpected_error)
