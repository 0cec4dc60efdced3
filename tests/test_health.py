"""The health check tells a load balancer whether the site is up, and its operators (admins, a
monitor with the token, or a process on the same host) which process answered and how it is."""

from __future__ import annotations

import os

import pytest

#: An address on the internet, not this host.
REMOTE = {"REMOTE_ADDR": "203.0.113.9"}


def test_healthz_reports_ok_with_the_process_and_database_to_a_local_monitor(client):
    response = client.get("/healthz")  # the test client talks from 127.0.0.1, no proxy
    assert response.status_code == 200
    report = response.get_json()
    assert {k: report[k] for k in ("status", "pid", "database")} == {
        "status": "ok", "pid": os.getpid(), "database": "ok"}
    # The realtime layer reports this worker's sockets, capacity and broker.
    assert report["realtime"]["sockets"] == 0
    assert report["realtime"]["capacity"] > 0
    assert report["realtime"]["broker"]["kind"] == "local"


def test_healthz_needs_no_login(client):
    assert client.get("/healthz", environ_base=REMOTE).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"X-Forwarded-For": "203.0.113.9"}],
                         ids=["from elsewhere", "through a proxy on this host"])
def test_anonymous_visitors_learn_only_whether_the_site_is_up(client, headers):
    environ = REMOTE if not headers else {}
    response = client.get("/healthz", headers=headers, environ_base=environ)
    assert response.status_code == 200
    # No host, pid, socket counts or broker state for anyone who asks.
    assert response.get_json() == {"status": "ok"}


def test_admins_see_the_full_report_from_anywhere(client, auth):
    auth.login("alice", "alice-password-1")
    assert set(client.get("/healthz", environ_base=REMOTE).get_json()) == {"status"}
    auth.logout()
    auth.login("boss", "boss-password-1")
    report = client.get("/healthz", environ_base=REMOTE).get_json()
    assert report["pid"] == os.getpid() and "realtime" in report


def test_a_monitor_with_the_token_sees_the_full_report(app, client):
    app.config["HEALTHZ_TOKEN"] = "s3cret-monitor-token"
    good = client.get("/healthz", environ_base=REMOTE,
                      headers={"Authorization": "Bearer s3cret-monitor-token"})
    assert "pid" in good.get_json()
    bad = client.get("/healthz", environ_base=REMOTE, headers={"Authorization": "Bearer guess"})
    assert bad.get_json() == {"status": "ok"}
    # With a token configured, being on this host is no longer enough.
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_extensions_can_add_to_the_health_report(app, client):
    class FakeRealtime:
        def health(self):
            return {"realtime": {"connections": 0}}

    app.extensions["realtime"] = FakeRealtime()
    assert client.get("/healthz").get_json()["realtime"] == {"connections": 0}


def test_healthz_reports_a_broken_database_as_503(client, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from app.extensions import db

    def unreachable(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(db.session, "execute", unreachable)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "degraded"
    assert response.get_json()["database"] == "error: OperationalError"
    assert client.get("/healthz", environ_base=REMOTE).get_json() == {"status": "degraded"}
