"""User stories about who sees what, and how errors look to browsers and to API clients."""

from __future__ import annotations

import re

import pytest


def test_a_user_is_refused_the_admin_page(client, auth):
    auth.login()
    response = client.get("/admin/")
    assert response.status_code == 403
    assert b"Forbidden" in response.data


def test_an_admin_sees_the_admin_page(client, auth):
    auth.login("boss", "boss-password-1")
    response = client.get("/admin/")
    assert response.status_code == 200
    assert b"Accounts" in response.data


def test_the_admin_link_is_shown_only_to_admins(client, auth):
    auth.login()
    assert b'href="/admin/"' not in client.get("/").data
    auth.logout()
    auth.login("boss", "boss-password-1")
    assert b'href="/admin/"' in client.get("/").data


def test_the_layout_hands_settings_to_scripts_through_data_attributes(client, auth):
    auth.login("boss", "boss-password-1")
    page = client.get("/").get_data(as_text=True)
    body = re.search(r"<body[^>]*>", page).group(0)
    assert re.search(r'data-user-id="\d+"', body)
    assert 'data-username="boss"' in body
    assert 'data-role="admin"' in body
    assert '<span id="rt-status" class="rt-status" data-state="offline">offline</span>' in page
    assert re.search(r'<a id="bell" href="[^"]+" class="bell" aria-label="Notifications"', page)


def test_pages_contain_no_inline_scripts_or_event_handlers(client, auth):
    pages = [client.get("/auth/login"), client.get("/auth/register"), client.get("/nope")]
    auth.login("boss", "boss-password-1")
    pages += [client.get("/"), client.get("/admin/")]
    for response in pages:
        html = response.get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
        assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE)
        assert "style=" not in html


def test_a_missing_page_is_json_for_a_client_that_prefers_json(client):
    response = client.get("/no-such-page", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert response.get_json() == {
        "error": {"code": 404, "message": response.get_json()["error"]["message"]}
    }
    assert response.get_json()["error"]["message"]


def test_errors_under_api_are_always_json(client):
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == 404


@pytest.mark.parametrize("accept", ["text/html", "*/*", "text/html,application/json;q=0.9"])
def test_a_missing_page_is_html_for_a_browser(client, accept):
    response = client.get("/no-such-page", headers={"Accept": accept})
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert b"Page not found" in response.data


def test_a_forbidden_page_is_json_for_a_client_that_prefers_json(client, auth):
    auth.login()
    response = client.get("/admin/", headers={"Accept": "application/json"})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == 403


def test_a_csrf_failure_is_json_for_a_client_that_prefers_json(client):
    response = client.post("/auth/login", headers={"Accept": "application/json"})
    assert response.status_code == 400
    assert "CSRF" in response.get_json()["error"]["message"]


def test_an_unexpected_error_is_a_500_page(app, client):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/boom")
    def boom():
        raise RuntimeError("kaboom")

    response = client.get("/boom", headers={"Accept": "application/json"})
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == 500
    assert "kaboom" not in response.get_data(as_text=True)
