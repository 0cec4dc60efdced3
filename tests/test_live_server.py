"""The site served by the real gunicorn (gthread), as in production."""

from __future__ import annotations

import requests

from tests.support.live import live_login


def test_gunicorn_serves_the_login_page(live_server):
    server = live_server()
    response = requests.get(server.url + "/auth/login", timeout=5)
    assert response.status_code == 200
    assert 'name="csrf_token"' in response.text
    assert response.headers["X-Frame-Options"] == "DENY"
    assert requests.get(server.url + "/healthz", timeout=5).json()["pid"] in server.worker_pids()


def test_a_demo_user_logs_in_over_http_and_sees_the_dashboard(live_server):
    server = live_server()
    with live_login(server, "alice", "alice-demo-pass") as http:
        page = http.get(server.url + "/", timeout=5)
    assert page.status_code == 200
    assert 'data-username="alice"' in page.text


def test_two_workers_share_logins_and_the_database(live_server):
    server = live_server(workers=2, threads=4)
    assert len(server.worker_pids()) == 2
    with live_login(server, "bob", "bob-demo-pass") as http:
        cookies = http.cookies
    # Fresh connections are spread over both workers; every one must accept bob's session.
    answers = set()
    for _ in range(20):
        with requests.Session() as fresh:
            fresh.cookies.update(cookies)
            assert fresh.get(server.url + "/", timeout=5, allow_redirects=False).status_code == 200
            answers.add(fresh.get(server.url + "/healthz", timeout=5).json()["pid"])
    assert answers <= set(server.worker_pids())
    server.stop()
    assert not server.is_running()
