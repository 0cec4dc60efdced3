"""Every response, pages and errors alike, carries the security headers."""

from __future__ import annotations

import pytest

EXPECTED = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@pytest.mark.parametrize(
    "path", ["/auth/login", "/", "/healthz", "/no-such-page", "/static/css/site.css"]
)
def test_security_headers_are_on_every_response(client, path):
    response = client.get(path)
    for name, value in EXPECTED.items():
        assert response.headers[name] == value, name
