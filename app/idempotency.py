"""One-time keys that make a double submit, or a retry after a lost answer, create one thing.

Every form that creates something carries a key generated when the page was rendered (a
hidden field); scripts send theirs in an ``Idempotency-Key`` header. The key travels with the
thing's event (``realtime.publish(..., key=...)``), whose log keeps one event per stream and
key: the second request finds the first one's event and answers with the same result.
"""

from __future__ import annotations

import secrets

from flask import Flask, abort, request
from flask_login import current_user
from markupsafe import Markup

#: The header a JSON or fetch caller sends its key in.
HEADER = "Idempotency-Key"
#: The hidden field a rendered form carries its key in.
FIELD = "idempotency_key"
#: Longest key a client may send (room is left for the user prefix; the log takes 128).
MAX_LENGTH = 100


def new_key() -> str:
    # A letter first: chat client ids may not start with "-" or "_".
    return "k" + secrets.token_urlsafe(18)


def request_key(scope: str) -> str | None:
    """This request's key for ``scope`` (what it creates: "announcement", "room"), or ``None``
    (an old page or a script that sends none).

    Keys are scoped to the user who sends them, so nobody can take another's key in advance,
    and to what they create, so a script that reuses one key on two endpoints gets two things,
    never the other endpoint's result. A malformed key is a 400: silently ignoring it would
    quietly lose the protection.
    """
    raw = request.headers.get(HEADER) or request.form.get(FIELD) or None
    if raw is None:
        return None
    if len(raw) > MAX_LENGTH or not raw.isascii() or not raw.isprintable() or " " in raw:
        abort(400, f"{HEADER} is 1-{MAX_LENGTH} printable ASCII characters without spaces.")
    owner = current_user.get_id() if current_user.is_authenticated else "anonymous"
    return f"u{owner}.{scope}.{raw}"


def hidden_field() -> Markup:
    """``{{ idempotency_field() }}`` in a form: a key for this rendering of the form."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(FIELD, new_key())


def init_app(app: Flask) -> None:
    app.jinja_env.globals["idempotency_field"] = hidden_field
    app.jinja_env.globals["new_idempotency_key"] = new_key
