"""A user cannot hoard sockets: past the per-user limit the handshake is refused with 429."""

from __future__ import annotations

import pytest
import websocket

from tests.support.live import live_login, start_live_server
from tests.support.sockets import Client, cookie_header, ws_url

#: Small, so the test opens a handful of sockets rather than twenty.
PER_USER = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_live_server(tmp_path_factory.mktemp("limits"), workers=1,
                             env={"REALTIME_MAX_SOCKETS_PER_USER": str(PER_USER)})
    yield live
    live.stop()


def test_one_socket_too_many_gets_429_with_retry_after_and_others_are_unaffected(server):
    alice = live_login(server, "alice", "alice-demo-pass")
    held = [Client(server, alice) for _ in range(PER_USER)]
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(ws_url(server), cookie=cookie_header(alice),
                                        origin=server.url, timeout=5)
        assert refused.value.status_code == 429
        assert int(refused.value.resp_headers["retry-after"]) > 0
        # The limit is per user: bob still gets in.
        bob = Client(server, live_login(server, "bob", "bob-demo-pass"))
        bob.close()
    finally:
        for client in held:
            client.close()
    # A closed tab gives its slot back.
    again = Client(server, alice)
    again.close()


def test_reconnecting_over_and_over_is_refused_after_the_handshake_rate(tmp_path):
    """A flooder closed with 4029 cannot just reconnect for a fresh allowance."""
    server = start_live_server(tmp_path, workers=1, env={"REALTIME_HANDSHAKES_PER_MINUTE": "5"})
    try:
        alice = live_login(server, "alice", "alice-demo-pass")
        for _ in range(5):
            Client(server, alice).close()
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(ws_url(server), cookie=cookie_header(alice),
                                        origin=server.url, timeout=5)
        assert refused.value.status_code == 429
        assert refused.value.resp_headers["retry-after"] == "60"
        # Another user is unaffected.
        Client(server, live_login(server, "bob", "bob-demo-pass")).close()
    finally:
        server.stop()
