"""The reference: the best a Python server does — ``websockets`` on uvloop, one process, one thread.

It speaks the protocol the load generator speaks to Tidings (``welcome``; ``subscribe`` answered by
``subscribed``; envelopes ``{type, stream, id, ts, data}``), so every figure is measured the same
way on all three servers. What it leaves out is what makes Tidings a product and not a toy: no
login (``/ws?user=<id>`` says who you are, as in the naive baseline), no Origin check, no durable
log (no resume after a reconnect), no admission control, no bound on a slow client's buffer.

The publish endpoint is plain HTTP on a second port (``websockets`` parses only GET requests):
``POST /bench/broadcast|notify`` and ``GET /bench/head`` with the same bodies as bench/server.py.
Run as ``python -m bench.ref_server --ws-port P --http-port Q``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs, urlsplit

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

rooms: dict[str, set[ServerConnection]] = defaultdict(set)
heads: dict[str, int] = defaultdict(int)
ids = itertools.count(1)


def publish(stream: str, i: int, pad: str) -> int:
    heads[stream] += 1
    text = json.dumps({"type": "bench", "stream": stream, "id": heads[stream],
                       "ts": time.time(), "data": {"i": i, "pad": pad}})
    broadcast(rooms.get(stream, ()), text)  # writes to each transport, never waits for one
    return heads[stream]


async def socket(ws: ServerConnection) -> None:
    query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
    user = query.get("user", ["0"])[0]
    own = (f"user:{user}", "broadcast", "role:user")
    await ws.send(json.dumps({"type": "welcome", "conn": f"ref:{os.getpid()}-{next(ids)}",
                              "user": user, "streams": list(own), "heartbeat": 25}))
    followed: set[str] = set()
    try:
        async for text in ws:
            message = json.loads(text)
            if message.get("type") != "subscribe":
                await ws.send(json.dumps({"type": "error", "code": "forbidden",
                                          "ref": message.get("ref")}))
                continue
            # One stream, or several in one message (as realtime.js sends them).
            for entry in message.get("streams") or [message]:
                stream = entry.get("stream")
                if stream not in own:
                    await ws.send(json.dumps({"type": "error", "code": "forbidden",
                                              "stream": stream, "ref": message.get("ref")}))
                    continue
                rooms[stream].add(ws)
                followed.add(stream)
                await ws.send(json.dumps({"type": "subscribed", "stream": stream,
                                          "head": heads[stream], "after": heads[stream],
                                          "ref": message.get("ref")}))
    except ConnectionClosed:
        pass  # the clients drop their sockets without a close frame when a session ends
    finally:
        for stream in followed:
            rooms[stream].discard(ws)


def handle(method: str, target: str, body: bytes) -> tuple[int, Any]:
    url = urlsplit(target)
    if method == "GET" and url.path == "/healthz":
        return 200, {"ok": True, "sockets": len(rooms.get("broadcast", ()))}
    if method == "GET" and url.path == "/bench/head":
        return 200, {"head": heads[parse_qs(url.query).get("stream", ["broadcast"])[0]]}
    if method != "POST" or url.path not in ("/bench/broadcast", "/bench/notify"):
        return 404, {"error": "not found"}
    request = json.loads(body or b"{}")
    pad = "x" * int(request.get("size", 0))
    count = int(request.get("n", 1))
    if url.path == "/bench/broadcast":
        return 200, {"ids": [publish("broadcast", i, pad) for i in range(count)]}
    users = [str(u) for u in request["users"]]
    sent = []
    for i in range(count):
        user = users[i % len(users)]
        sent.append([int(user), publish(f"user:{user}", i, pad)])
    return 200, {"sent": sent}


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 with keep-alive, just enough for the orchestrator's requests."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            status, payload = handle(method, target, body)
            out = json.dumps(payload).encode()
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(out)}\r\n\r\n".encode() + out)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(ws_port: int, http_port: int) -> None:
    async with serve(socket, "127.0.0.1", ws_port, compression=None, ping_interval=None,
                     max_size=64 * 1024, backlog=2048):
        server = await asyncio.start_server(http, "127.0.0.1", http_port, backlog=2048)
        async with server:
            await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ws-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(main(args.ws_port, args.http_port))
