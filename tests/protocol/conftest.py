"""One real gunicorn for every protocol test, and logged-in HTTP sessions to open sockets with."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.live import LiveServer, live_login, start_live_server


@pytest.fixture(scope="package")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    """One worker, the embedded broker: these tests are about frames, not fan-out. A 2 s
    heartbeat keeps server pings in play; a 1 s sweep picks up the publisher's events quickly."""
    live = start_live_server(
        tmp_path_factory.mktemp("protocol"),
        workers=1,
        env={"REALTIME_HEARTBEAT": "2", "REALTIME_SWEEP_INTERVAL": "1"},
    )
    yield live
    live.stop()


@pytest.fixture(scope="package")
def alice(server) -> requests.Session:
    """Alice's logged-in session (its cookie is what every client presents)."""
    return live_login(server, "alice", "alice-demo-pass")
