"""The protocol through `websockets`, a strict asyncio client: it fails on any frame the server
gets wrong, so a clean run is evidence of a well-formed server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from tests.support.sockets import cookie_header, publisher, ws_url

T = TypeVar("T")


def run(coroutine_fn: Callable[[], Awaitable[T]]) -> T:
    """Run in a thread of its own: Playwright's sync API (tests/browser) keeps an event loop
    marked running on the main thread for the whole session, so asyncio.run() there fails."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(asyncio.wait_for(coroutine_fn(), timeout=30))
        except BaseException as exc:  # re-raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def open_socket(server, http) -> Any:
    return connect(ws_url(server), additional_headers={"Cookie": cookie_header(http)},
                   origin=server.url, open_timeout=10)


async def next_message(ws: ClientConnection, type_: str | None = None) -> dict[str, Any]:
    """The next JSON message (of ``type_`` if given), heartbeats skipped."""
    while True:
        message = json.loads(await ws.recv())
        if message["type"] != "hb" and (type_ is None or message["type"] == type_):
            return message


def test_welcome_subscribe_resume_and_pong_with_a_strict_client(server, alice):
    jobs = publisher(server)

    async def story() -> dict[str, Any]:
        async with open_socket(server, alice) as ws:
            welcome = await next_message(ws, "welcome")
            uid = welcome["user"]
            missed = [jobs.notify(uid, "notification", {"n": n}).seq for n in range(2)]
            await ws.send(json.dumps({"type": "subscribe", "stream": f"user:{uid}",
                                      "after": missed[0] - 1, "ref": 1}))
            subscribed = await next_message(ws, "subscribed")
            events = [await next_message(ws, "notification") for _ in missed]
            await ws.send(json.dumps({"type": "ping", "ref": 2}))
            pong = await next_message(ws, "pong")
            # websockets resolves this only for a pong carrying exactly our payload.
            latency = await asyncio.wait_for(await ws.ping(b"strict"), timeout=10)
            return {"subscribed": subscribed, "missed": missed,
                    "ids": [e["id"] for e in events], "pong": pong, "latency": latency}

    seen = run(story)
    assert seen["subscribed"]["ref"] == 1
    assert seen["ids"] == seen["missed"]
    assert seen["pong"]["ref"] == 2
    assert seen["latency"] >= 0


def test_a_client_close_code_is_echoed(server, alice):
    async def story() -> tuple[int, str]:
        async with open_socket(server, alice) as ws:
            await next_message(ws, "welcome")
            await ws.close(code=4000, reason="leaving")
            rcvd = ws.protocol.close_rcvd  # what the server sent back, not what we sent
            assert rcvd is not None
            return rcvd.code, rcvd.reason

    assert run(story) == (4000, "leaving")


def test_a_binary_message_is_refused_with_1003(server, alice):
    async def story() -> int:
        async with open_socket(server, alice) as ws:
            await next_message(ws, "welcome")
            await ws.send(b"\x00\x01binary")
            with pytest.raises(ConnectionClosedError) as closed:
                while True:
                    await ws.recv()
            return closed.value.rcvd.code

    assert run(story) == 1003


def test_without_a_session_the_strict_client_gets_401(server):
    async def story() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server), origin=server.url, open_timeout=10):
                pass
        return refused.value.response.status_code

    assert run(story) == 401
