"""Who may open one more socket, decided before the upgrade: no I/O, no Flask, one lock.

flask-sock accepts a WebSocket before the route function runs, so every refusal has to be made
in ``before_request`` (views.py) from what this module answers:

- :func:`handshake_refusal`: a request that is not a WebSocket handshake we can complete gets
  400 (or 426 naming the version we speak) with the JSON error, never a 500 from deeper down;
- :func:`origin_allowed`: the page that opens the socket is the site's own (scheme included) or
  an allowed one;
- :class:`Admission`: capacity, sockets per user and per address, handshakes per minute per user
  and per address. A reservation takes every slot at once under one lock, for a handshake still
  in flight as much as for an open socket, so parallel handshakes cannot slip past a limit
  between a check and the count.

Limits are per worker process, like the sockets they count.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import threading
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .inbound import TokenBucket

#: The WebSocket protocol version this server speaks (RFC 6455).
WEBSOCKET_VERSION = "13"
#: Seconds over which handshake rates are counted.
WINDOW = 60.0
#: Rate windows kept before idle ones are forgotten (bounds memory, not the limits).
MAX_TRACKED = 10_000


@dataclass(frozen=True)
class Refusal:
    """An HTTP answer to a handshake: status, message for the JSON body, and why (for counters)."""

    status: int
    message: str
    reason: str
    retry_after: int | None = None
    headers: tuple[tuple[str, str], ...] = ()


def handshake_refusal(method: str, headers: Mapping[str, str]) -> Refusal | None:
    """None if ``headers`` make a WebSocket handshake we can complete, else why not.

    The same checks the handshake itself makes later (wsproto), made first so that a broken or
    foreign handshake gets a clear 4xx instead of an exception inside flask-sock.
    """
    if method != "GET":
        return Refusal(405, "A WebSocket handshake is a GET request.", "handshake")
    if headers.get("Upgrade", "").strip().lower() != "websocket" or "upgrade" not in {
        token.strip().lower() for token in headers.get("Connection", "").split(",")
    }:
        return Refusal(
            400, "This endpoint only speaks WebSocket (Upgrade: websocket).", "handshake"
        )
    if headers.get("Sec-WebSocket-Version", "").strip() != WEBSOCKET_VERSION:
        return Refusal(
            426,
            f"This server speaks WebSocket version {WEBSOCKET_VERSION} only.",
            "handshake",
            headers=(("Sec-WebSocket-Version", WEBSOCKET_VERSION),),
        )
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        return Refusal(400, "Sec-WebSocket-Key is missing or malformed.", "handshake")
    if not headers.get("Host", "").strip():
        return Refusal(400, "The Host header is missing.", "handshake")
    return None


def address_key(address: str | None) -> str | None:
    """What per-address limits count by: the IPv4 address, or the /64 of an IPv6 address.

    One IPv6 subscriber is usually handed a whole /64, so counting single IPv6 addresses would
    let one client spread itself over as many "addresses" as it likes.
    """
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _origin_key(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not scheme or not parts.hostname:
        return None
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(scheme)
    return scheme, parts.hostname.lower(), port if port is not None else default


def origin_allowed(origin: str | None, own: str, allowed: list[str]) -> bool:
    """May a page from ``origin`` open a socket on the site at ``own`` (scheme://host[:port])?

    The scheme counts: ``http://site`` is another origin than ``https://site``, and a page
    served over plain HTTP must not ride on the cookies of the HTTPS site. No ``Origin`` means
    no browser (browsers always send one on a WebSocket handshake): accepted.
    """
    if origin is None:
        return True
    theirs = _origin_key(origin)
    if theirs is None:
        return False
    return theirs == _origin_key(own) or theirs in {_origin_key(each) for each in allowed}


@dataclass(frozen=True)
class AdmissionLimits:
    """The ``REALTIME_*`` admission settings; 0 for a per-address limit means none."""

    capacity: int
    per_user: int
    per_address: int
    handshakes_per_minute: int
    handshakes_per_minute_per_address: int
    retry_after: int
    #: Commands per second (and burst) all one user's sockets share; 0: no shared budget.
    user_rate: float = 0.0
    user_burst: int = 0


class Ticket:
    """The slots one handshake took; :meth:`release` gives them back, once however often called.

    ``budget`` is the command bucket the user's sockets in this worker share (None: no limit).
    """

    __slots__ = ("user", "address", "budget", "_admission", "_released")

    def __init__(self, admission: Admission, user: str, address: str | None,
                 budget: TokenBucket | None = None):
        self.user = user
        self.address = address
        self.budget = budget
        self._admission = admission
        self._released = False

    def release(self) -> None:
        self._admission._release(self)


class _Window:
    """Times of recent events for one key, at most ``limit`` of them."""

    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def take(self, now: float, limit: int) -> bool:
        times = self.times
        while times and now - times[0] > WINDOW:
            times.popleft()
        if len(times) >= limit:
            return False
        times.append(now)
        return True


class Admission:
    """This worker's count of sockets and handshakes; thread-safe, every decision atomic."""

    def __init__(self, limits: AdmissionLimits):
        self.limits = limits
        self._lock = threading.Lock()
        self.admitted = 0  # sockets open or being opened
        self._by_user: Counter[str] = Counter()
        self._by_address: Counter[str] = Counter()
        self._user_rate: dict[str, _Window] = {}
        #: One command bucket per user with a socket here, dropped with the user's last socket.
        self._budgets: dict[str, TokenBucket] = {}
        self._address_rate: dict[str, _Window] = {}

    def attempt(self, address: str | None, now: float) -> Refusal | None:
        """Count one handshake from ``address`` (any handshake, even one refused later)."""
        address = address_key(address)
        limit = self.limits.handshakes_per_minute_per_address
        if address is None or limit <= 0:
            return None
        with self._lock:
            if not self._window(self._address_rate, address, now).take(now, limit):
                return Refusal(429, "Too many connection attempts from this address; wait a "
                               "minute.", "address_rate", retry_after=int(WINDOW))
        return None

    def check(self, user: str, address: str | None) -> Refusal | None:
        """What :meth:`reserve` would refuse for want of a slot; counts nothing (``/ws/check``)."""
        address = address_key(address)
        with self._lock:
            return self._slot_refusal(user, address) or self._capacity_refusal()

    def reserve(self, user: str, address: str | None, now: float) -> Ticket | Refusal:
        """Take a socket slot for ``user`` at ``address``, or say why not; all or nothing."""
        address = address_key(address)
        limits = self.limits
        with self._lock:
            refusal = self._slot_refusal(user, address)
            if refusal is not None:
                return refusal
            if not self._window(self._user_rate, user, now).take(
                now, limits.handshakes_per_minute
            ):
                return Refusal(429, "Too many connection attempts; wait a minute.", "user_rate",
                               retry_after=int(WINDOW))
            refusal = self._capacity_refusal()
            if refusal is not None:
                return refusal
            self.admitted += 1
            self._by_user[user] += 1
            if address is not None:
                self._by_address[address] += 1
            budget = None
            if limits.user_rate > 0:
                budget = self._budgets.get(user)
                if budget is None:
                    budget = self._budgets[user] = TokenBucket(
                        limits.user_rate, limits.user_burst, now
                    )
            return Ticket(self, user, address, budget)

    def _slot_refusal(self, user: str, address: str | None) -> Refusal | None:
        limits = self.limits
        if self._by_user[user] >= limits.per_user:
            return Refusal(429, "Too many open tabs for this account.", "user_sockets",
                           retry_after=limits.retry_after)
        if (
            address is not None
            and limits.per_address > 0
            and self._by_address[address] >= limits.per_address
        ):
            return Refusal(429, "Too many open connections from this address.",
                           "address_sockets", retry_after=limits.retry_after)
        return None

    def _capacity_refusal(self) -> Refusal | None:
        if self.admitted >= self.limits.capacity:
            return Refusal(503, "Realtime capacity reached; retry shortly.", "capacity",
                           retry_after=self.limits.retry_after)
        return None

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket._released:
                return
            ticket._released = True
            self.admitted -= 1
            _decrement(self._by_user, ticket.user)
            if ticket.user not in self._by_user:
                self._budgets.pop(ticket.user, None)
            if ticket.address is not None:
                _decrement(self._by_address, ticket.address)

    def user_count(self, user: str) -> int:
        with self._lock:
            return self._by_user[user]

    @staticmethod
    def _window(windows: dict[str, _Window], key: str, now: float) -> _Window:
        window = windows.get(key)
        if window is None:
            if len(windows) >= MAX_TRACKED:
                _forget(windows, now)
            window = windows[key] = _Window()
        return window


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


def _forget(windows: dict[str, _Window], now: float) -> None:
    # Keys whose newest entry is older than the window limit nothing any more. If that is not
    # enough (that many keys really active), the oldest half goes: memory stays bounded, and
    # what is forgotten is a rate, never a socket count.
    for key in [k for k, w in windows.items() if not w.times or now - w.times[-1] > WINDOW]:
        del windows[key]
    if len(windows) >= MAX_TRACKED:
        for key in list(windows)[: len(windows) // 2]:
            del windows[key]
