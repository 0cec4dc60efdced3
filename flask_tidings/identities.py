"""Who a login session belongs to, remembered by one worker for a few seconds: no I/O here.

Every handshake otherwise loads the user row and checks the session version in the database,
although a tab that reloads, a second tab or a reconnect presents the same session again and
again. The worker remembers the :class:`Identity` that a session's key (Flask-Login's
``"<id>.<session version>"``) loaded to, for ``ttl`` seconds.

Revocation stays exact because it goes through the path that already closes sockets:
:meth:`Realtime.disconnect_user` (logout, password change, deactivation) reaches every worker,
and each forgets the user here (:meth:`IdentityCache.forget_user`) as it closes their sockets. A
load that was already running when that happened read the session as it was before: it must not
be remembered, so every forget moves ``generation`` on, and a load started under an older
generation is dropped. A worker whose broker link is down (a forget could be missed) does not
use the cache at all, and one that reconnects forgets everything (see extension.py).
"""

from __future__ import annotations

import threading
from collections import defaultdict

from .connection import Identity

#: Sessions one worker remembers at most; the oldest go first.
SIZE = 10_000


class IdentityCache:
    def __init__(self, ttl: float, size: int = SIZE):
        self.ttl = ttl
        self.size = size
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Identity]] = {}
        self._keys: dict[str, set[str]] = defaultdict(set)  # user id -> their sessions' keys
        #: Moves on at every forget: a load begun before it is not remembered.
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str, now: float) -> Identity | None:
        """The identity ``key`` loaded to less than ``ttl`` seconds ago, else None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= now:
                self.misses += 1
                return None
            self.hits += 1
            return entry[1]

    def put(self, key: str, identity: Identity, now: float, generation: int) -> None:
        """Remember what ``key`` loaded to, unless a forget happened since the load began
        (``generation`` is what :attr:`generation` was then)."""
        if self.ttl <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if key not in self._entries and len(self._entries) >= self.size:
                oldest = next(iter(self._entries))
                self._drop(oldest)
            self._entries[key] = (now + self.ttl, identity)
            self._keys[identity.user_id].add(key)

    def forget_user(self, user_id: str) -> None:
        """Every session of ``user_id`` must be loaded again (it may have been revoked)."""
        with self._lock:
            self.generation += 1
            for key in self._keys.pop(user_id, ()):
                self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everyone (a forget may have been missed: the broker lost messages)."""
        with self._lock:
            self.generation += 1
            self._entries.clear()
            self._keys.clear()

    def _drop(self, key: str) -> None:
        _, identity = self._entries.pop(key)
        keys = self._keys.get(identity.user_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys[identity.user_id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
