"""On a site that already runs PostgreSQL: the log lives there, and LISTEN/NOTIFY fans out
between workers with no Redis at all."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from tests.realtime.test_delivery import clients_on_both_workers
from tests.support import services
from tests.support.live import start_live_server
from tests.support.sockets import Client, health, publisher


@pytest.fixture
def postgres_database():
    name = f"tidings_rt_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(services.POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is not reachable ({exc}); make test starts it (scripts/test-services.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip("!!! SKIPPING POSTGRESQL REALTIME TESTS !!! " + reason)
    admin.execute(f'CREATE DATABASE "{name}"')
    yield services.postgres_url(name)
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


def test_two_workers_on_postgresql_fan_out_through_listen_notify(tmp_path, postgres_database,
                                                                  live_login_as):
    server = start_live_server(tmp_path, workers=2, env={"DATABASE_URL": postgres_database})
    try:
        http = live_login_as(server, "alice", "alice-demo-pass")
        clients = clients_on_both_workers(server, http)
        assert health(server)["realtime"]["broker"]["kind"] == "postgres"
        own = clients[0].own_stream
        for client in clients:
            client.subscribe("broadcast")
            client.subscribe(own)
        jobs = publisher(server)
        sent = [jobs.broadcast("announcement", {"n": i})[0].seq for i in range(5)]
        # Larger than a NOTIFY payload: announced by id, read from the log by each worker.
        big = jobs.notify(own.split(":")[1], "notification", {"pad": "x" * 20000})
        for client in clients:
            assert [m["id"] for m in client.events(5, "broadcast")] == sent
            [note] = client.events(1, own)
            assert note["id"] == big.seq and len(note["data"]["pad"]) == 20000
        # A client that reconnects resumes from the PostgreSQL log.
        clients[0].close()
        again = Client(server, http)
        again.subscribe("broadcast", after=sent[1])
        assert [m["id"] for m in again.events(3, "broadcast")] == sent[2:]
        again.close()
        clients[1].close()
    finally:
        server.stop()
