"""Shared real servers for the realtime tests: starting gunicorn costs a second or two."""

from __future__ import annotations

import pytest

from tests.support import services
from tests.support.live import start_live_server

#: Fast heartbeats so dead-peer tests finish quickly, and a fast sweep of the log.
FAST = {"REALTIME_HEARTBEAT": "2", "REALTIME_SWEEP_INTERVAL": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One gunicorn worker, no Redis: the embedded default."""
    live = start_live_server(tmp_path_factory.mktemp("rt-one"), workers=1, env=FAST)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """Two gunicorn workers fanning out through the local Redis."""
    live = start_live_server(
        tmp_path_factory.mktemp("rt-two"),
        workers=2,
        env={**FAST, "REDIS_URL": services.REDIS_URL,
             "REALTIME_REDIS_CHANNEL": f"tidings-test-{id(tmp_path_factory)}"},
    )
    yield live
    live.stop()
