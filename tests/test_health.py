"""The health check tells a load balancer (and the tests) which process answered and how it is."""

from __future__ import annotations

import os


def test_healthz_reports_ok_with_the_process_and_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    report = response.get_json()
    assert {k: report[k] for k in ("status", "pid", "database")} == {
        "status": "ok", "pid": os.getpid(), "database": "ok"}
    # The realtime layer reports this worker's sockets, capacity and broker.
    assert report["realtime"]["sockets"] == 0
    assert report["realtime"]["capacity"] > 0
    assert report["realtime"]["broker"]["kind"] == "local"


def test_healthz_needs_no_login(client):
    assert client.get("/healthz").status_code == 200


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
