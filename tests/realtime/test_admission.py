"""Who may open one more socket, decided before the upgrade and without a server
(flask_tidings/admission.py): malformed handshakes, origins, and limits that parallel
handshakes cannot slip past."""

from __future__ import annotations

import threading

import pytest

from flask_tidings.admission import (
    Admission,
    AdmissionLimits,
    Refusal,
    Ticket,
    handshake_refusal,
    origin_allowed,
)
from flask_tidings.connection import Connection, Identity
from flask_tidings.hub import Hub

GOOD = {
    "Host": "tidings.example",
    "Upgrade": "websocket",
    "Connection": "keep-alive, Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def without(name: str) -> dict[str, str]:
    return {k: v for k, v in GOOD.items() if k != name}


def test_a_proper_handshake_passes():
    assert handshake_refusal("GET", GOOD) is None


@pytest.mark.parametrize("headers, status", [
    ({**GOOD, "Sec-WebSocket-Version": "8"}, 426),
    ({**GOOD, "Sec-WebSocket-Version": ""}, 426),
    (without("Sec-WebSocket-Version"), 426),
    (without("Sec-WebSocket-Key"), 400),
    ({**GOOD, "Sec-WebSocket-Key": ""}, 400),
    ({**GOOD, "Sec-WebSocket-Key": "not base64!"}, 400),
    ({**GOOD, "Sec-WebSocket-Key": "c2hvcnQ="}, 400),  # decodes to 5 bytes, not 16
    (without("Upgrade"), 400),
    ({**GOOD, "Connection": "keep-alive"}, 400),
    (without("Host"), 400),
], ids=["version-8", "version-empty", "version-missing", "key-missing", "key-empty",
        "key-not-base64", "key-too-short", "no-upgrade", "no-connection-upgrade", "no-host"])
def test_a_handshake_we_cannot_complete_gets_a_4xx(headers, status):
    refusal = handshake_refusal("GET", headers)
    assert refusal is not None and refusal.status == status
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in refusal.headers


@pytest.mark.parametrize("origin, allowed, ok", [
    (None, [], True),
    ("https://tidings.example", [], True),
    ("https://TIDINGS.example:443", [], True),
    ("http://tidings.example", [], False),  # same host, other scheme: another origin
    ("https://tidings.example:8443", [], False),
    ("https://evil.example", [], False),
    ("https://app.partner.example", ["https://app.partner.example"], True),
    ("http://app.partner.example", ["https://app.partner.example"], False),
    ("null", [], False),
    ("https://[::1", [], False),
])
def test_the_origin_must_match_scheme_host_and_port(origin, allowed, ok):
    assert origin_allowed(origin, "https://tidings.example", allowed) is ok


def limits(**changes) -> AdmissionLimits:
    base = dict(capacity=1000, per_user=20, per_address=100, handshakes_per_minute=1000,
                handshakes_per_minute_per_address=1000, retry_after=5)
    return AdmissionLimits(**{**base, **changes})


def test_sixty_parallel_handshakes_get_exactly_the_per_user_cap():
    admission = Admission(limits(per_user=20))
    start = threading.Barrier(60)
    results: list[Ticket | Refusal] = []
    lock = threading.Lock()

    def handshake() -> None:
        start.wait()
        result = admission.reserve("7", "203.0.113.1", now=0.0)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=handshake) for _ in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tickets = [r for r in results if isinstance(r, Ticket)]
    refusals = [r for r in results if isinstance(r, Refusal)]
    assert len(tickets) == 20
    assert {(r.status, r.reason) for r in refusals} == {(429, "user_sockets")}


def test_handshakes_in_flight_count_until_released():
    admission = Admission(limits(per_user=2))
    first = admission.reserve("7", None, now=0.0)
    second = admission.reserve("7", None, now=0.0)
    assert isinstance(admission.reserve("7", None, now=0.0), Refusal)
    assert isinstance(first, Ticket) and isinstance(second, Ticket)
    first.release()
    first.release()  # twice (the handshake failed, then its teardown ran): counted once
    assert admission.user_count("7") == 1
    assert isinstance(admission.reserve("7", None, now=0.0), Ticket)
    assert isinstance(admission.reserve("7", None, now=0.0), Refusal)


def test_many_accounts_from_one_address_share_its_cap():
    admission = Admission(limits(per_address=5))
    got = [admission.reserve(f"user-{n}", "198.51.100.7", now=0.0) for n in range(8)]
    assert sum(isinstance(r, Ticket) for r in got) == 5
    refused = got[5]
    assert isinstance(refused, Refusal) and (refused.status, refused.reason) == (
        429, "address_sockets")
    # Another address is not affected.
    assert isinstance(admission.reserve("user-9", "198.51.100.8", now=0.0), Ticket)


def test_an_ipv6_client_counts_by_its_64_not_by_each_address():
    admission = Admission(limits(per_address=2))
    got = [admission.reserve(f"u{n}", f"2001:db8:1:2::{n:x}", now=0.0) for n in range(1, 4)]
    assert [isinstance(r, Ticket) for r in got] == [True, True, False]
    assert isinstance(admission.reserve("u9", "2001:db8:1:3::1", now=0.0), Ticket)
    # An IPv4 client seen through an IPv6 socket is the IPv4 client.
    assert admission.reserve("u10", "::ffff:192.0.2.1", now=0.0).address == "192.0.2.1"


def test_a_zero_per_address_limit_means_none():
    admission = Admission(limits(per_address=0, handshakes_per_minute_per_address=0))
    assert all(isinstance(admission.reserve(f"u{n}", "10.0.0.1", now=0.0), Ticket)
               for n in range(300))
    assert all(admission.attempt("10.0.0.1", now=0.0) is None for _ in range(3000))


def test_handshake_attempts_per_address_are_counted_per_minute():
    admission = Admission(limits(handshakes_per_minute_per_address=3))
    assert [admission.attempt("192.0.2.1", now=t) for t in (0, 1, 2)] == [None] * 3
    refusal = admission.attempt("192.0.2.1", now=3)
    assert refusal is not None and (refusal.status, refusal.retry_after) == (429, 60)
    assert admission.attempt("192.0.2.2", now=3) is None
    assert admission.attempt("192.0.2.1", now=61) is None  # the first one left the window


def test_the_per_user_handshake_rate_holds_across_sockets_that_closed():
    admission = Admission(limits(handshakes_per_minute=3))
    for _ in range(3):
        ticket = admission.reserve("7", None, now=0.0)
        assert isinstance(ticket, Ticket)
        ticket.release()
    refusal = admission.reserve("7", None, now=1.0)
    assert isinstance(refusal, Refusal) and refusal.reason == "user_rate"


def test_capacity_is_one_count_for_the_worker():
    admission = Admission(limits(capacity=2))
    assert isinstance(admission.reserve("a", None, now=0.0), Ticket)
    assert isinstance(admission.reserve("b", None, now=0.0), Ticket)
    refusal = admission.reserve("c", None, now=0.0)
    assert isinstance(refusal, Refusal) and (refusal.status, refusal.reason) == (503, "capacity")
    assert admission.check("c", None) == refusal  # the check endpoint says the same, counts nothing
    assert admission.admitted == 2


def test_memory_for_rates_stays_bounded_under_many_addresses(monkeypatch):
    import flask_tidings.admission as module

    monkeypatch.setattr(module, "MAX_TRACKED", 100)
    admission = Admission(limits())
    for n in range(1000):
        admission.attempt(f"10.0.{n // 256}.{n % 256}", now=0.0)
    assert len(admission._address_rate) <= 100


class _Conn:
    """Enough of a connection for the hub's registry."""

    def __init__(self, user: str):
        self.identity = Identity(user)
        self.streams: dict = {}


def test_a_disconnect_during_the_handshake_is_found_when_the_connection_registers():
    hub = Hub()
    handshake_began = 10.0
    # The logout arrives while the handshake is still in flight: nothing to close yet.
    assert hub.disconnect_user("7", 4001, "signed out", now=11.0) == []
    late: Connection = _Conn("7")  # type: ignore[assignment]
    assert hub.add(late, since=handshake_began) == (4001, "signed out")


def test_a_disconnect_before_the_handshake_began_does_not_close_the_new_socket():
    hub = Hub()
    hub.disconnect_user("7", 4001, "signed out", now=5.0)
    fresh: Connection = _Conn("7")  # type: ignore[assignment]
    assert hub.add(fresh, since=6.0) is None
    assert hub.disconnect_user("7", 4001, "signed out", now=7.0) == [fresh]


def test_the_followers_of_one_stream_are_those_subscribed_to_it_and_still_connected():
    hub = Hub()
    ada: Connection = _Conn("1")  # type: ignore[assignment]
    bob: Connection = _Conn("2")  # type: ignore[assignment]
    for conn in (ada, bob):
        hub.add(conn)
    hub.subscribe_many(ada, ["broadcast", "user:1"])
    ada.streams.update({"broadcast": None, "user:1": None})
    hub.subscribe(bob, "broadcast")
    bob.streams["broadcast"] = None
    assert set(hub.followers("broadcast")) == {ada, bob}
    assert hub.followers("user:1") == (ada,)
    assert hub.followers("user:2") == ()
    hub.remove(ada)
    assert hub.followers("broadcast") == (bob,)
    assert hub.followers("user:1") == ()
