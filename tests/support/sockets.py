"""Real WebSocket clients for the live server: websocket-client with the login cookie, a raw
socket for clients that misbehave, and a publisher that acts like a team's background job."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import requests
import websocket
from flask import Flask

from flask_tidings import Realtime
from tests.support.live import LiveServer


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http://", "ws://") + "/ws"


def cookie_header(http: requests.Session) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in http.cookies)


class Client:
    """A logged-in socket that reads JSON messages and skips heartbeats."""

    def __init__(self, server: LiveServer, http: requests.Session, timeout: float = 10.0):
        self.server = server
        self.ws = websocket.create_connection(
            ws_url(server), cookie=cookie_header(http), origin=server.url, timeout=timeout
        )
        self.welcome = self.expect("welcome")
        #: Opaque, the same for every socket of one worker (the welcome names no host or pid).
        self.worker = self.welcome["conn"].rsplit("-", 1)[0]
        #: This user's private stream, ``user:<id>``.
        self.own_stream = f"user:{self.welcome['user']}"

    @property
    def pid(self) -> int:
        """The pid of the worker holding this socket, from the server's own log line for it."""
        return worker_pid(self.server, self.welcome["conn"])

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message other than a heartbeat; ``timeout`` bounds the whole wait (the
        heartbeats that keep arriving do not extend it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise websocket.WebSocketTimeoutException("no message before the deadline")
                self.ws.settimeout(remaining)
            message = json.loads(self.ws.recv())
            if message.get("type") != "hb":
                return message

    def expect(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.1, deadline - time.monotonic()))
            if message.get("type") == type_:
                return message
            if time.monotonic() > deadline:
                raise AssertionError(f"no {type_!r} message; last was {message}")

    def subscribe(self, stream: str, after: int | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "subscribe", "stream": stream, "ref": stream}
        if after is not None:
            message["after"] = after
        self.send(message)
        reply = self.recv()
        assert reply.get("ref") == stream, reply
        return reply

    def events(self, count: int, stream: str | None = None, timeout: float = 15.0) -> list[dict]:
        """The next ``count`` stored events (those with an id), optionally of one stream."""
        found: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(found)} of {count} events: {found[-3:]}")
            message = self.recv(remaining)
            if "id" in message and (stream is None or message["stream"] == stream):
                found.append(message)
        return found

    def close_frame(self, timeout: float = 10.0) -> tuple[int, str]:
        """Read until the server's close frame; return (code, reason)."""
        self.ws.settimeout(timeout)
        while True:
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                return code, data[2:].decode(errors="replace")

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


class RawClient:
    """A hand-made WebSocket client: it can stop reading, skip masking, send bad bytes."""

    def __init__(self, server: LiveServer, http: requests.Session, rcvbuf: int | None = None):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {server.url}\r\nCookie: {cookie_header(http)}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise AssertionError(f"handshake failed: {head!r}")
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buffer = b""

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, masked: bool = True,
                   rsv: int = 0) -> None:
        first = (0x80 if fin else 0) | rsv | opcode
        n = len(payload)
        mask_bit = 0x80 if masked else 0
        if n < 126:
            header = struct.pack("!BB", first, mask_bit | n)
        elif n < 65536:
            header = struct.pack("!BBH", first, mask_bit | 126, n)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, n)
        if masked:
            mask = os.urandom(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            header += mask
        self.sock.sendall(header + payload)

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def read_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        self.sock.settimeout(timeout)

        def need(n: int) -> bytes:
            while len(self.buffer) < n:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                self.buffer += chunk
            out, self.buffer = self.buffer[:n], self.buffer[n:]
            return out

        first, second = need(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack("!H", need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", need(8))[0]
        return first & 0x0F, need(n)

    def close_code(self, timeout: float = 10.0) -> int | None:
        """Read (and drop) frames until the server's close frame; return its code, or None if
        the server ended the TCP connection without one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                opcode, payload = self.read_frame(max(0.1, deadline - time.monotonic()))
            except ConnectionError:
                return None
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        raise AssertionError("the server neither closed nor ended the connection")

    def close(self) -> None:
        self.sock.close()


def worker_pid(server: LiveServer, conn: str, timeout: float = 10.0) -> int:
    """Which worker process holds connection ``conn``: the log of its open says (as ``pid=`` once
    the site formats its logs, and as ``worker=host:pid`` in any case). The line is written
    before the welcome is sent, so it is there by the time a client has read its welcome."""
    pattern = re.compile(rf"socket open.*\bconn={re.escape(conn)}(\s|$)")
    deadline = time.monotonic() + timeout
    while True:
        for line in server.read_log().splitlines():
            if pattern.search(line):
                found = re.search(r"\bworker=\S*:(\d+)", line) or re.search(r"\bpid=(\d+)", line)
                if found:
                    return int(found.group(1))
        if time.monotonic() > deadline:
            raise AssertionError(f"no 'socket open' line for conn={conn} in the server log")
        time.sleep(0.1)


def publisher(server: LiveServer) -> Realtime:
    """A Realtime bound to the live server's database and broker, outside the server: the way a
    CLI command, cron job or worker queue of a team's site publishes."""
    app = Flask("publisher")
    app.config.update(
        SECRET_KEY="publisher",
        REALTIME_DATABASE_URL=server.env["DATABASE_URL"],
        REALTIME_REDIS_URL=server.env.get("REDIS_URL"),
        REALTIME_BROKER="redis" if server.env.get("REDIS_URL") else (
            "postgres" if server.env["DATABASE_URL"].startswith("postgresql") else "database"),
    )
    if server.env.get("REALTIME_REDIS_CHANNEL"):
        app.config["REALTIME_REDIS_CHANNEL"] = server.env["REALTIME_REDIS_CHANNEL"]
    realtime = Realtime()
    realtime.init_app(app)
    _stop_with(server, realtime.state().stop)
    return realtime


def _stop_with(server: LiveServer, stop: Callable[[], None]) -> None:
    """Run ``stop`` when the server is stopped: a publisher's threads end with its test, before
    the test drops the database they would otherwise keep trying to reach."""
    stops: list[Callable[[], None]] = server.__dict__.setdefault("_publisher_stops", [])
    if not stops:
        stop_server = server.stop

        def stop_all(*args: Any, **kwargs: Any) -> None:
            while stops:
                stops.pop()()
            stop_server(*args, **kwargs)

        server.stop = stop_all  # type: ignore[method-assign]
    stops.append(stop)


def health(server: LiveServer) -> dict[str, Any]:
    return requests.get(server.url + "/healthz", timeout=5).json()
