"""Fan-out between the processes of one host, with no broker service: Unix datagrams.

The embedded default (SQLite, no Redis) runs every process of a site on one host: gunicorn's
workers, and whatever else publishes (``flask`` commands, cron jobs, a job-queue worker). Each
process that serves sockets binds a datagram socket in a directory private to the site (derived
from the database's path); a publisher, once its event is committed, sends the same message it
hands its own dispatcher to every other socket in that directory. A worker then delivers it as if
it had been published locally: no polling, so a cron job's event reaches open sockets in
milliseconds instead of at the next sweep of the log.

Datagrams are only an announcement, like every broker's message: the log is the truth. One that
cannot be sent at once (the receiver's buffer is full) is dropped, and the receiver's sweep finds
the event in the log; a message too large for a datagram is announced as "read the log now".
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from .brokers import MemoryBroker

log = logging.getLogger("tidings.realtime")

#: Largest message sent whole; larger ones become a "resync" notice (the receiver reads the log).
MAX_DATAGRAM = 60 * 1024

_RESYNC = b'{"k":"resync"}'


def site_directory(identity: str, base: str | None = None) -> str:
    """The folder of one site's sockets: short (socket paths are limited to 108 bytes), private
    to this user, and the same for every process that opens the same database."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    root = base or os.path.join(tempfile.gettempdir(), f"tidings-{os.getuid()}")
    path = os.path.join(root, digest)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class LocalWake:
    """The datagram sockets of one site's processes on this host."""

    def __init__(self, directory: str):
        self.directory = directory
        self.dropped = 0
        self._sender: socket.socket | None = None
        self._sender_pid = 0
        self._own: str | None = None

    def _send_socket(self) -> socket.socket:
        if self._sender is None or self._sender_pid != os.getpid():
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
            self._sender_pid = os.getpid()
        return self._sender

    def send(self, body: bytes) -> None:
        """Announce ``body`` to every other process of the site that listens on this host."""
        if len(body) > MAX_DATAGRAM:
            body = _RESYNC
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        sender = self._send_socket()
        for name in names:
            path = os.path.join(self.directory, name)
            if path == self._own or not name.endswith(".sock"):
                continue
            try:
                sender.sendto(body, path)
            except (BlockingIOError, InterruptedError):
                self.dropped += 1  # that worker is flooded: its sweep reads the log instead
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    _unlink(path)  # a process that died without cleaning up
                else:
                    self.dropped += 1

    def listen(self, receive: Callable[[bytes], None]) -> None:
        """Bind this process's socket and hand every datagram to ``receive`` on a thread."""
        path = os.path.join(self.directory, f"{os.getpid()}.sock")
        _unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        # Room for a burst from other processes while the dispatcher is busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._own = path

        def run() -> None:
            while True:
                try:
                    receive(sock.recv(MAX_DATAGRAM + 1024))
                except Exception:
                    log.exception("local broker receive failed")

        threading.Thread(target=run, name="tidings-local", daemon=True).start()

    def close(self) -> None:
        if self._own:
            _unlink(self._own)
            self._own = None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class LocalBroker(MemoryBroker):
    """Every process of the site on one host: the in-process queue of :class:`MemoryBroker` for
    this process's own events (drained by a dispatcher thread, so publishers never touch
    sockets) plus datagrams to the other processes. Processes that only publish start no thread
    at all: their events go out as datagrams only."""

    name = "local"

    def __init__(self, directory: str):
        super().__init__()
        self.wake = LocalWake(directory)
        self._resync: Callable[[], None] = lambda: None

    def start(self, deliver: Callable[[list[dict[str, Any]]], None], resync: Callable[[], None]):
        self._resync = resync
        super().start(deliver, resync)
        self.wake.listen(self._received)

    def _received(self, body: bytes) -> None:
        message = json.loads(body)
        if message.get("k") == "resync":
            self._resync()
        else:
            self._queue.put(message)

    def publish(self, message: dict[str, Any]) -> None:
        super().publish(message)  # this process's own sockets, when it serves any
        self.wake.send(json.dumps(message, separators=(",", ":")).encode())

    def stop(self) -> None:
        super().stop()
        self.wake.close()

    def state(self) -> dict[str, Any]:
        return {**super().state(), "dropped": self.wake.dropped}
