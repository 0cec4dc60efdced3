"""Sessions end everywhere at once: logout and deactivation close live sockets in every worker."""

from __future__ import annotations

import re

import websocket

from tests.realtime.test_delivery import clients_on_both_workers
from tests.support.forms import csrf_token_from
from tests.support.sockets import Client, cookie_header, ws_url


def test_logout_closes_the_users_sockets_in_every_worker(redis_server, live_login_as):
    http = live_login_as(redis_server, "bob", "bob-demo-pass")
    clients = clients_on_both_workers(redis_server, http)
    bystander = Client(redis_server, live_login_as(redis_server, "alice", "alice-demo-pass"))
    try:
        token = csrf_token_from(http.get(redis_server.url + "/").text)
        http.post(redis_server.url + "/auth/logout", data={"csrf_token": token})
        codes = [client.close_frame()[0] for client in clients]
        assert codes == [4001, 4001]
        # Only bob's sockets: alice's still answers.
        bystander.send({"type": "ping", "ref": "still-here"})
        assert bystander.expect("pong")["ref"] == "still-here"
    finally:
        for client in [*clients, bystander]:
            client.close()


def test_a_session_logged_out_in_one_worker_opens_no_socket_in_any_worker_afterwards(
        redis_server, live_login_as):
    """Both workers remember the session (issue 18: no user load per handshake); the logout
    makes each forget it before it closes the sockets, so once they are closed, the old cookie
    is refused everywhere."""
    http = live_login_as(redis_server, "alice", "alice-demo-pass")
    clients = clients_on_both_workers(redis_server, http)
    old_cookie = cookie_header(http)
    try:
        token = csrf_token_from(http.get(redis_server.url + "/").text)
        http.post(redis_server.url + "/auth/logout", data={"csrf_token": token})
        assert [client.close_frame()[0] for client in clients] == [4001, 4001]
        for _ in range(10):  # the kernel picks the worker: both get their turn
            try:
                ws = websocket.create_connection(ws_url(redis_server), cookie=old_cookie,
                                                 origin=redis_server.url, timeout=5)
            except websocket.WebSocketBadStatusException as exc:
                assert exc.status_code == 401
            else:
                ws.close()
                raise AssertionError("a logged-out session opened a socket")
    finally:
        for client in clients:
            client.close()


def test_a_deactivated_user_is_disconnected_live_and_cannot_come_back(server, live_login_as):
    victim = live_login_as(server, "bob", "bob-demo-pass")
    client = Client(server, victim)
    admin = live_login_as(server, "admin", "admin-demo-pass")
    page = admin.get(server.url + "/admin/users").text
    # Find bob's row form precisely: the form right after the cell with his name.
    row = page[page.index("<td>bob</td>"):]
    action = re.search(r'action="(/admin/users/\d+/active)"', row).group(1)
    token = csrf_token_from(page)
    response = admin.post(server.url + action, data={"csrf_token": token, "active": "0"})
    assert response.status_code in (200, 302)
    code, reason = client.close_frame()
    assert (code, reason) == (4001, "account deactivated")
    # The old session no longer opens pages or sockets.
    # (``/`` is the public landing page now: a page that needs a login says it.)
    assert victim.get(server.url + "/notifications", allow_redirects=False).status_code == 302
    try:
        websocket.create_connection(ws_url(server), cookie=cookie_header(victim),
                                    origin=server.url, timeout=5)
        raise AssertionError("a deactivated user opened a socket")
    except websocket.WebSocketBadStatusException as exc:
        assert exc.status_code == 401
    # Reactivate for the other tests sharing this server.
    page = admin.get(server.url + "/admin/users").text
    admin.post(server.url + action, data={"csrf_token": csrf_token_from(page), "active": "1"})


def test_a_user_cannot_deactivate_anyone(server, live_login_as):
    http = live_login_as(server, "alice", "alice-demo-pass")
    token = csrf_token_from(http.get(server.url + "/").text)
    response = http.post(server.url + "/admin/users/1/active",
                         data={"csrf_token": token, "active": "0"}, allow_redirects=False)
    assert response.status_code == 403
