"""An app of the realtime layer alone, in this process, and real WebSocket clients for it.

A client is a WebSocket over a socket pair: its handshake is done by wsproto on both ends, then
the server end is handed to the app's own reactor and command pool exactly as the socket view
does after a real handshake. Tests can then reach into the app (monkeypatch its store to make the
database fail at a chosen call) while every frame still travels a real socket.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Ping, Request, TextMessage

from flask_tidings import Identity, Realtime, RealtimeState
from flask_tidings.connection import Connection


def make_app(directory: Path, **config: Any) -> tuple[Flask, Realtime, RealtimeState]:
    """A Flask app with only the realtime layer, its log in a SQLite file of its own, started
    as a serving worker (reactor, command pool, in-process broker and sweep)."""
    app = Flask(f"realtime-{directory.name}")
    settings = {"DATABASE_URL": f"sqlite:///{directory / 'log.db'}", "SWEEP_INTERVAL": 0.2}
    settings.update(config)
    app.config["SECRET_KEY"] = "local"
    app.config.update({f"REALTIME_{key}": value for key, value in settings.items()})
    realtime = Realtime()
    realtime.init_app(app)
    state: RealtimeState = app.extensions["realtime"]
    state.store.create_tables()
    with app.test_request_context():
        state.ensure_started()
    return app, realtime, state


class LocalClient:
    """A logged-in socket of ``user_id`` served by ``state``'s reactor."""

    def __init__(self, state: RealtimeState, user_id: str):
        ours, theirs = socket.socketpair()
        self.sock = ours
        self.ws = WSConnection(ConnectionType.CLIENT)
        server = WSConnection(ConnectionType.SERVER)
        server.receive_data(self.ws.send(Request(host="localhost", target="/ws")))
        assert [type(e) for e in server.events()] == [Request]
        self.ws.receive_data(server.send(AcceptConnection()))
        assert [type(e) for e in self.ws.events()] == [AcceptConnection]

        conn = Connection(theirs, server, Identity(user_id, user_id), state.limits,
                          state.reactor)
        environ = EnvironBuilder(path="/ws", base_url="http://localhost").get_environ()
        conn.environ = {k: v for k, v in environ.items() if isinstance(v, str)}
        assert state.commands is not None and state.reactor is not None
        conn.schedule = state.commands.schedule
        ticket = state.admission.reserve(user_id, "127.0.0.1", time.monotonic())
        commands = state.commands

        def finished(conn: Connection) -> None:  # as views.start_connection does
            ticket.release()
            commands.finished(conn)

        conn.on_finished = finished
        state.hub.add(conn)
        state.reactor.add(conn)
        self.conn = conn
        self.stream = f"user:{user_id}"
        self._buffer: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(self.ws.send(Message(data=json.dumps(message))))

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message other than a heartbeat; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no message before the deadline")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError("the server closed the socket")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    message = json.loads(event.data)
                    if message.get("type") != "hb":
                        self._buffer.append(message)
                elif isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    raise ConnectionError(f"closed by the server: {event.code}")
        return self._buffer.pop(0)

    def close(self) -> None:
        self.conn.close(1000, "test over")
        self.sock.close()


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for one test, as a SQLAlchemy URL (dropped afterwards)."""
    import psycopg

    from tests.support.services import POSTGRES_ADMIN_DSN as ADMIN_DSN

    name = f"tidings_local_{int(time.time() * 1000) % 10**9}"
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"!!! SKIPPING POSTGRESQL TEST !!! PostgreSQL unreachable ({exc})")
    admin.execute(f'CREATE DATABASE "{name}"')
    yield ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()
