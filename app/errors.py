"""Error pages that answer JSON to API clients and HTML to browsers."""

from __future__ import annotations

from flask import Flask, current_app, g, has_app_context, jsonify, render_template, request
from flask.globals import request_ctx
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError


def wants_json() -> bool:
    """True for ``/api/`` paths and for clients whose best Accept match is JSON."""
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _plain(code: int, message: str):
    return f"{code}: {message}\n", code, {"Content-Type": "text/plain; charset=utf-8"}


def error_response(code: int, message: str):
    if wants_json():
        return jsonify({"error": {"code": code, "message": message}}), code
    if request_ctx.url_adapter is None:
        # The request never got as far as routing (a Host not in TRUSTED_HOSTS): pages, which
        # link with url_for, cannot be built for it.
        return _plain(code, message)
    return render_template("errors/error.html", code=code, message=message), code


def handle_http_exception(error: HTTPException):
    return error_response(error.code or 500, error.description or error.name)


def handle_csrf_error(error: CSRFError):
    # Usually an expired page or a missing cookie; telling the user to reload is the fix.
    return error_response(400, f"{error.description} Reload the page and try again.")


#: Shown for every unexpected error; the details go to the log, never to the visitor.
SERVER_ERROR_MESSAGE = (
    "Something went wrong on our side and it has been logged. Please try again in a moment."
)


#: Shown when the database refused us (down, restarting, out of connections, locked past the
#: busy timeout): nothing is wrong with the request, and trying again shortly is the fix.
UNAVAILABLE_MESSAGE = (
    "The site is briefly unavailable. Please try again in a moment."
)
#: Seconds a client is asked to wait (``Retry-After``) after a database outage answer.
UNAVAILABLE_RETRY_AFTER = 5


def database_unavailable(error: BaseException | None) -> bool:
    """True for the database failing to answer, as opposed to a bug: the driver's
    "operational" errors (connection refused or dropped, too many clients, database locked,
    read-only file) and a pool with no connection to lend."""
    return isinstance(error, (OperationalError, PoolTimeout))


def saved(what: str) -> None:
    """Say that ``what`` ("Your announcement") is committed, with its event.

    Called right after the commit: if anything fails later in the request (reading the row
    back, a follow-up notification, rendering the answer), the error answer says the thing was
    saved and will be delivered, so the user does not take a 500 for "nothing happened".
    """
    if has_app_context():
        g.saved_before_error = what


def _saved_message() -> str | None:
    what = g.get("saved_before_error") if has_app_context() else None
    if not what:
        return None
    return (f"{what} was saved and will be delivered; only this answer failed. Reload the "
            "page to see it. Sending it again will not send it twice.")


def handle_unexpected_error(error: Exception):
    """The 500 page (503 for a database outage), built without the database or the user.

    A database outage is a common cause, and the usual page (base.html asks who is logged in;
    context processors may count unread items) would fail in turn, leaving gunicorn's bare
    error page. So the template comes straight from the Jinja environment, with no context
    processors, and reads nothing but its arguments. An outage answers 503 with
    ``Retry-After``: clients, proxies and crawlers then know it is temporary (realtime.js
    backs off and comes back; a 500 reads as a bug).
    """
    # Flask passes the original exception wrapped in InternalServerError for unhandled errors.
    original = getattr(error, "original_exception", None) or error
    saved_message = _saved_message()
    if saved_message:
        # Committed before the failure: say so, whatever failed afterwards (even the database).
        code, title, message = 500, "Saved, but this answer failed", saved_message
        headers: dict[str, str] = {}
    elif database_unavailable(original):
        code, title, message = 503, "Briefly unavailable", UNAVAILABLE_MESSAGE
        headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}
    else:
        code, title, message = 500, "Something went wrong", SERVER_ERROR_MESSAGE
        headers = {}
    if wants_json():
        body: dict = {"code": code, "message": message}
        if saved_message:
            body["saved"] = True
        elif code == 500:
            body["message"] = InternalServerError.description
        return jsonify({"error": body}), code, headers
    if request_ctx.url_adapter is None:
        text, _, plain = _plain(code, message)
        return text, code, {**plain, **headers}
    page = current_app.jinja_env.get_template("errors/500.html").render(
        code=code, title=title, message=message)
    return page, code, {"Content-Type": "text/html; charset=utf-8", **headers}


def register_errorhandlers(app: Flask) -> None:
    app.register_error_handler(CSRFError, handle_csrf_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(InternalServerError, handle_unexpected_error)
