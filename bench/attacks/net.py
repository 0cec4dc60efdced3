"""Clients that come from a chosen loopback address: browsers (requests), sockets
(websocket-client) and raw TCP for the clients that misbehave.

Linux routes all of 127.0.0.0/8 to the loopback interface, so binding a client to 127.0.0.12
makes it, for nginx and for the site, a different machine from the victim on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import struct
import time
from typing import Any

import requests
import websocket
from requests.adapters import HTTPAdapter

from tests.support.forms import csrf_token_from

#: What the victim and the attackers present as their browser.
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) bench.attacks"


class _SourceAdapter(HTTPAdapter):
    """Connections bound to one source address."""

    def __init__(self, source: str):
        self.source = source
        super().__init__(pool_connections=4, pool_maxsize=64)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def browser(source: str = "127.0.0.1") -> requests.Session:
    """A fresh browser (no cookies) on the machine at ``source``."""
    http = requests.Session()
    http.mount("http://", _SourceAdapter(source))
    http.headers["User-Agent"] = USER_AGENT
    return http


def cookie_header(http: requests.Session) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in http.cookies)


def csrf(http: requests.Session, url: str) -> str:
    """The CSRF token of the form on ``url`` (a GET, as a browser would load the page)."""
    page = http.get(url, timeout=30)
    page.raise_for_status()
    return csrf_token_from(page.text)


def post_login(http: requests.Session, base: str, username: str, password: str) -> int:
    """Submit the login form; the status (302 on success, 200 with an error, 429 throttled)."""
    token = csrf(http, base + "/auth/login")
    answer = http.post(base + "/auth/login", timeout=30, allow_redirects=False,
                       data={"csrf_token": token, "username": username, "password": password})
    return answer.status_code


def login(base: str, username: str, password: str, source: str = "127.0.0.1",
          http: requests.Session | None = None) -> requests.Session:
    """A browser at ``source`` logged in as ``username``; raises if the site says no."""
    http = http or browser(source)
    status = post_login(http, base, username, password)
    if status != 302:
        raise RuntimeError(f"login as {username} from {source} answered {status}")
    return http


def register(http: requests.Session, base: str, username: str, password: str) -> int:
    """Submit the registration form; 302 means the account exists and ``http`` is logged in."""
    token = csrf(http, base + "/auth/register")
    answer = http.post(base + "/auth/register", timeout=30, allow_redirects=False, data={
        "csrf_token": token, "username": username, "email": "", "password": password,
        "confirm": password})
    return answer.status_code


def tcp(port: int, source: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def ws_client(base: str, port: int, cookie: str, source: str = "127.0.0.1",
              timeout: float = 10.0) -> websocket.WebSocket:
    """A well-behaved socket (websocket-client) from ``source``, welcome already read."""
    ws = websocket.create_connection(
        base.replace("http://", "ws://") + "/ws", socket=tcp(port, source, timeout),
        cookie=cookie, origin=base, header=[f"User-Agent: {USER_AGENT}"], timeout=timeout)
    while json.loads(ws.recv()).get("type") != "welcome":
        pass
    return ws


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    key = os.urandom(4)
    return header + key + _mask(payload, key)


class RawSocket:
    """A hand-made WebSocket client that can send anything and reads what comes back."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""
        self.closed_with: int | str | None = None

    @classmethod
    def handshake(cls, base: str, port: int, cookie: str, source: str,
                  headers: dict[str, str] | None = None, timeout: float = 10.0,
                  ) -> tuple[int, RawSocket | bytes]:
        """Ask for ``/ws``; (101, the open socket) or (status, the answer's head and body)."""
        sock = tcp(port, source, timeout)
        fields = {
            "Host": base.split("//", 1)[1], "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13", "Origin": base, "Cookie": cookie,
            "User-Agent": USER_AGENT,
        }
        for name, value in (headers or {}).items():
            if value is None:
                fields.pop(name, None)
            else:
                fields[name] = value
        request = "GET /ws HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        try:
            sock.sendall((request + "\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
        except OSError as exc:
            sock.close()
            return 0, repr(exc).encode()
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        if status != 101:
            sock.settimeout(1.0)
            try:  # the refusal's body, for its Content-Type and message
                while len(head) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    head += chunk
            except OSError:
                pass
            sock.close()
            return status, head
        raw = cls(sock)
        raw.buffer = head.split(b"\r\n\r\n", 1)[1]
        return 101, raw

    def send(self, data: bytes, timeout: float = 1.0) -> bool:
        """Write ``data``; False once the server has ended the connection."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
            return True
        except TimeoutError:
            return True  # the server is not reading right now; that is its right
        except OSError:
            return False

    def frames(self, wait: float = 0.0) -> list[tuple[int, bytes]]:
        """Complete frames available within ``wait`` seconds (a close frame sets
        ``closed_with``; an ended connection without one sets it to ``"reset"``)."""
        out: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + wait
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                readable, _, _ = select.select([self.sock], [], [], remaining)
            except (OSError, ValueError):
                readable = []
            if not readable:
                break
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                if self.closed_with is None:
                    self.closed_with = "reset"
                break
            self.buffer += chunk
            out.extend(self._parse())
            if self.closed_with is not None:
                break
        return out

    def _parse(self) -> list[tuple[int, bytes]]:
        out = []
        while len(self.buffer) >= 2:
            first, second = self.buffer[0], self.buffer[1]
            n, offset = second & 0x7F, 2
            if n == 126:
                if len(self.buffer) < 4:
                    break
                n, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif n == 127:
                if len(self.buffer) < 10:
                    break
                n, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
            if len(self.buffer) < offset + n:
                break
            opcode, payload = first & 0x0F, self.buffer[offset:offset + n]
            self.buffer = self.buffer[offset + n:]
            if opcode == 0x8:
                self.closed_with = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 \
                    else 1005
            out.append((opcode, payload))
        return out

    def wait_closed(self, timeout: float) -> int | str | None:
        """Read until the server closes (its close code, or ``"reset"``) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.closed_with is None and time.monotonic() < deadline:
            self.frames(min(0.5, max(0.0, deadline - time.monotonic())))
        return self.closed_with

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
