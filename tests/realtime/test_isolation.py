"""Isolation by default (issue 17.2): two sites on one Redis never see each other's events.

Each site's channel is derived from its own database unless REALTIME_REDIS_CHANNEL is set, and
every message carries the site's id; a message of another site is ignored even when two sites
were given the same channel by mistake. Both sites here have an alice with id 1 and the same
demo notifications, so their ``user:1`` streams have the same numbers: a leak would both show
site B's private notification to site A's alice and make A drop its own next event as seen.
"""

from __future__ import annotations

import shutil
import uuid

import pytest
import requests

from tests.realtime.test_resilience import PrivateRedis
from tests.support.live import live_login, start_live_server
from tests.support.sockets import Client, publisher


@pytest.fixture
def shared_redis(tmp_path):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed; `make test` installs it")
    instance = PrivateRedis(tmp_path)
    instance.start()
    yield instance
    instance.kill()


@pytest.mark.parametrize("channel", ["derived", "the same by mistake"])
def test_a_private_notification_never_reaches_another_site(tmp_path, shared_redis, channel):
    env = {"REDIS_URL": shared_redis.url, "REALTIME_SWEEP_INTERVAL": "1"}
    if channel != "derived":
        env["REALTIME_REDIS_CHANNEL"] = f"tidings-shared-{uuid.uuid4().hex}"
    site_a = start_live_server(tmp_path / "a", workers=1, env=env)
    site_b = start_live_server(tmp_path / "b", workers=1, env=env)
    try:
        reader_a = Client(site_a, live_login(site_a, "alice", "alice-demo-pass"))
        reader_b = Client(site_b, live_login(site_b, "alice", "alice-demo-pass"))
        assert reader_a.own_stream == reader_b.own_stream == "user:1"
        head_a = reader_a.subscribe("user:1")["head"]
        head_b = reader_b.subscribe("user:1")["head"]
        assert head_a == head_b  # same numbers on both sites: the worst case for a leak

        secret = publisher(site_b).notify(1, "notification", {"title": "B's payroll is ready"})
        # Site B's own reader has it, so Redis has already handed it to every subscriber of
        # that channel: had site A's worker been one, it would be on its way to A's alice now.
        assert reader_b.events(1, "user:1")[0]["id"] == secret.seq == head_b + 1
        own = publisher(site_a).notify(1, "notification", {"title": "A's own news"})

        [first] = reader_a.events(1, "user:1")
        assert first["data"] == {"title": "A's own news"}  # not B's, and A's own not dropped
        assert first["id"] == own.seq == head_a + 1

        broker_a = requests.get(site_a.url + "/healthz", timeout=5).json()["realtime"]["broker"]
        if channel == "derived":
            assert broker_a["foreign"] == 0  # a channel of its own: nothing foreign even arrives
        else:
            assert broker_a["foreign"] >= 1  # it arrived, and was ignored
        reader_a.close()
        reader_b.close()
    finally:
        site_a.stop()
        site_b.stop()
