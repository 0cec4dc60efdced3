"""Security headers added to every response."""

from __future__ import annotations

from flask import Flask, Response, current_app

#: No inline scripts or styles anywhere; WebSockets may connect back to this origin (ws: / wss:).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)

#: Header name → value, set on every response unless a view already chose its own value.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    # Production only (HSTS_SECONDS): once seen over HTTPS, browsers refuse plain HTTP to the
    # site for that long, so nobody on the path can strip TLS from a later visit.
    hsts = int(current_app.config.get("HSTS_SECONDS") or 0)
    if hsts > 0:
        response.headers.setdefault(
            "Strict-Transport-Security", f"max-age={hsts}; includeSubDomains")
    return response


def register_security_headers(app: Flask) -> None:
    app.after_request(add_security_headers)
