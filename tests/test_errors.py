"""Error pages that still show when the database is gone, and ids too large to be ids."""

from __future__ import annotations

import pytest
from werkzeug.routing import ValidationError

from app.extensions import db


@pytest.fixture
def database_gone(app, tmp_path):
    """Pull the SQLite file out from under the app: every new connection fails to open it."""

    def pull() -> None:
        app.config["PROPAGATE_EXCEPTIONS"] = False  # answer as production does, not raise
        with app.app_context():
            db.engine.dispose()
        (tmp_path / "test.db").rename(tmp_path / "moved-away.db")
        (tmp_path / "test.db").mkdir()  # a directory where the file was: "unable to open"

    return pull


def test_a_database_outage_shows_the_sites_own_error_page(client, auth, database_gone):
    auth.login()
    database_gone()
    response = client.get("/")  # the logged-in dashboard: loading alice needs the database
    # An outage is temporary, not a bug: 503 with a time to come back, so browsers' scripts,
    # proxies and crawlers retry instead of treating the page as broken.
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    page = response.get_data(as_text=True)
    assert "briefly unavailable" in page and "try again" in page
    assert 'class="site-header"' in page and "/static/css/site.css" in page
    assert "Traceback" not in page and "OperationalError" not in page
    # JSON clients get JSON, as for every other error.
    as_json = client.get("/", headers={"Accept": "application/json"})
    assert as_json.status_code == 503 and as_json.get_json()["error"]["code"] == 503
    assert "briefly unavailable" in as_json.get_json()["error"]["message"]


def test_an_error_page_shown_during_an_outage_does_not_need_the_database(client, auth,
                                                                         database_gone):
    auth.login()
    database_gone()
    # A 404 page normally has the logged-in header; with no database it falls back to the
    # site's plain error page instead of failing in turn.
    response = client.get("/no-such-page")
    assert response.status_code == 503
    assert "briefly unavailable" in response.get_data(as_text=True)


def test_a_bug_is_still_a_500_and_says_nothing_of_its_cause(app, client):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/boom")
    def boom():
        raise ValueError("the secret recipe")

    response = client.get("/boom")
    assert response.status_code == 500 and "Retry-After" not in response.headers
    page = response.get_data(as_text=True)
    assert "Something went wrong" in page and "secret recipe" not in page


def test_logged_out_pages_keep_working_without_the_database(client, database_gone):
    database_gone()
    assert client.get("/").status_code == 200  # the landing page
    assert client.get("/auth/login").status_code == 200


@pytest.mark.parametrize("path", [
    "/chat/99999999999999999999",
    "/chat/99999999999999999999/messages",
    "/notifications/99999999999999999999/read",
    "/announcements/99999999999999999999/dismiss",
    "/admin/users/99999999999999999999/active",
    "/chat/messages/2147483648/delete",
])
def test_an_id_too_large_for_any_row_is_a_404_not_a_500(client, auth, path):
    auth.login("boss", "boss-password-1")
    # 404, or 405 where the path's only route takes the other method: never a 500.
    codes = {client.get(path).status_code, client.post(path).status_code}
    assert codes <= {404, 405} and 404 in codes, codes


def test_every_int_route_refuses_ids_beyond_the_id_columns(app):
    """Whatever routes arrive later: every ``<int:...>`` in the app is the bounded converter."""
    from werkzeug.routing import IntegerConverter

    from app import MAX_ID, BoundedIntConverter

    converters = [(rule, c) for rule in app.url_map.iter_rules()
                  for c in rule._converters.values() if isinstance(c, IntegerConverter)]
    assert converters, "no <int:...> routes found"
    for rule, converter in converters:
        assert isinstance(converter, BoundedIntConverter), rule.rule
        assert converter.to_python(str(MAX_ID)) == MAX_ID
        with pytest.raises(ValidationError):
            converter.to_python(str(MAX_ID + 1))
