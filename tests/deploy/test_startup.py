"""A server started the way production starts refuses what would be unsafe there."""

from __future__ import annotations

import pytest

from tests.support.live import start_live_server


def test_gunicorn_behind_a_proxy_refuses_to_serve_the_demo_accounts(tmp_path):
    # Bound to loopback, but with a proxy in front: the world reaches it, and the demo
    # passwords are in the README.
    with pytest.raises(RuntimeError) as refused:
        start_live_server(tmp_path, env={"TRUSTED_PROXY_HOPS": "1"})
    message = str(refused.value)
    assert "gunicorn exited with" in message
    assert "Demo accounts (alice, bob, admin; passwords in the README) are only for a site" \
           " bound to loopback" in message
    # Turning them off is the documented way out, and then the same server starts.
    server = start_live_server(tmp_path / "off", env={"TRUSTED_PROXY_HOPS": "1",
                                                     "TIDINGS_DEMO_ACCOUNTS": "0"})
    server.stop()
