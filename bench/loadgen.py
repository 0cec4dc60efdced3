"""The load generator: picows sockets on asyncio, spread over client processes driven by pipes.

Each process holds its share of the sockets, records for every event of type ``bench`` its
(stream, id) and ``receive time - ts`` (same machine, same clock), and answers the orchestrator's
commands: connect, reset, count, report, close.

The clients share the two cores with the server under test, so every microsecond they spend per
message is taken from the server. picows parses frames in C; once a socket is ready, a frame
costs only a timestamp and an append (``Sock.on_ws_frame``): decoding the JSON, latency and
loss/duplicate bookkeeping wait until ``report``, after the measurement.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import random
import re
import resource
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from picows import WSListener, WSMsgType, WSTransport, ws_connect

#: Sent on every handshake; the session identifier Flask-Login checks is computed for it too.
USER_AGENT = "tidings-bench/1"
#: Handshakes in flight per process: enough to connect fast, few enough not to overflow backlogs.
CONNECT_CONCURRENCY = 100
#: Seconds one socket may take from TCP connect to its last "subscribed" reply.
READY_TIMEOUT = 60.0
#: The browser client's reconnect delays (flask_tidings/static/realtime.js), seconds: the
#: backoff's first cap and its ceiling, and the window after a 1001 or 4008 (tests/test_bench.py
#: holds these to the script's).
MIN_DELAY, MAX_DELAY, SOON_DELAY = 0.5, 20.0, 1.0
#: After a restart told it when to come back, the backoff's cap (realtime.js RESTART_MAX_DELAY).
RESTART_MAX_DELAY = 5.0
#: The latest moment a restarting server may name (realtime.js TOLD_MAX_DELAY).
TOLD_MAX_DELAY = 30.0
#: "restart; retry in 1.7s": the moment a stopping server chose for this client (docs/protocol.md).
RETRY_IN = re.compile(rb"retry in ([0-9]+(?:\.[0-9]+)?)s")
#: What the start of a measured event's frame holds, in Tidings' envelope (``{"type":"bench",``)
#: and the baseline's (``{"type": "bench",``): enough to count arrivals without decoding them.
BENCH_MARK = b'"bench"'


def told_delay(code: int | None, reason: bytes) -> float | None:
    """Seconds a 1001's reason asks the client to wait, as realtime.js reads it, else None."""
    if code != 1001:
        return None
    match = RETRY_IN.search(reason or b"")
    return min(float(match.group(1)), TOLD_MAX_DELAY) if match else None


@dataclass
class Spec:
    """One socket to open: who it is and what it follows."""

    index: int
    user: int
    cookie: str  # "" for the baseline and the reference (they have no login)
    streams: tuple[str, ...]
    stalled: bool = False


class Peer:
    """One simulated browser tab: its sockets over time and every event they received.

    With ``Proc.reconnecting`` on it behaves as flask_tidings/static/realtime.js does: after a
    1001 whose reason says when ("restart; retry in 1.7s") it comes back then, and backs off at
    most 5 s from there while the restart lasts; after another 1001 or a 4008 (cut off) it
    reconnects within a random 0-1 s; after any other loss, or a refused handshake (for which it
    asks ``/ws/check`` why, as the browser must), it waits a random time up to
    0.5 s x 2^(attempt-1), capped at 20 s (full jitter); the attempt count resets at each
    welcome. It resubscribes with ``after`` = the last id it saw on each stream.
    """

    def __init__(self, spec: Spec, proc: Proc):
        self.spec = spec
        self.proc = proc
        #: (receive time, payload) of every text frame that may be an event, over all sockets.
        self.raw: list[tuple[float, bytes]] = []
        self.scanned = 0
        self.cursors: dict[str, int] = {}
        self.sock: Sock | None = None
        self.attempt = 0
        self.restarting = False  # told when to come back by a restart: the backoff stays short
        self.ready_at = 0.0  # when the current socket last finished subscribing
        self.connects = 0
        self.close_codes: list[str] = []
        self.stopped = False
        self.worker = ""
        #: (index in ``raw``, worker) at each welcome: which worker sent which frames.
        self.segments: list[tuple[int, str]] = []

    def update_cursors(self) -> None:
        """The last id seen per stream: the newest frames, decoded until each stream has one."""
        missing = set(self.spec.streams)
        for n in range(len(self.raw) - 1, self.scanned - 1, -1):
            msg = json.loads(self.raw[n][1])
            stream, seq = msg.get("stream"), msg.get("id")
            if stream in missing and isinstance(seq, int):
                missing.discard(stream)
                self.cursors[stream] = max(self.cursors.get(stream, 0), seq)
                if not missing:
                    break
        self.scanned = len(self.raw)

    def lost(self, sock: Sock) -> None:
        self.close_codes.append(str(sock.close_code or "no-close-frame"))
        if self.proc.reconnecting and not self.stopped and sock is self.sock:
            asyncio.get_running_loop().create_task(
                self.reconnect(sock.close_code, told_delay(sock.close_code, sock.close_reason)))

    async def open(self, timeout: float) -> Sock:
        """One handshake; returns the socket once the server accepted it (raises otherwise)."""
        headers = {"User-Agent": USER_AGENT, "Origin": self.proc.origin}
        if self.spec.cookie:
            headers["Cookie"] = self.spec.cookie
        url = self.proc.url if self.spec.cookie else f"{self.proc.url}?user={self.spec.user}"
        holder: list[Sock] = []

        def factory() -> Sock:
            holder.append(Sock(self))
            return holder[0]

        self.connects += 1
        await ws_connect(factory, url, extra_headers=headers, websocket_handshake_timeout=timeout)
        self.sock = holder[0]
        if self.sock.disconnected:  # lost before we got here: nobody else will reconnect it
            raise ConnectionError("disconnected right after the handshake")
        return holder[0]

    async def reconnect(self, code: int | None, told: float | None = None) -> None:
        soon = code in (1001, 4008)
        if told is not None:
            # The server chose this moment (a restart spreads its clients): take it, and start
            # the backoff over from there, capped short (realtime.js scheduleReconnect).
            self.restarting = True
            self.attempt = 0
        while not self.stopped:
            if told is not None:
                delay, told = told, None
            else:
                self.attempt += 1
                cap = min(MAX_DELAY, MIN_DELAY * 2 ** (self.attempt - 1))
                if self.restarting:
                    cap = min(cap, RESTART_MAX_DELAY)
                delay = random.random() * (SOON_DELAY if soon else cap)
            await asyncio.sleep(delay)
            soon = False
            if self.stopped:
                return
            try:
                await self.open(READY_TIMEOUT)
                return  # from here the socket's own callbacks carry on (or call lost() again)
            except Exception:
                pass
            status = await http_status(self.proc.check_url, self.spec.cookie)
            if status in (401, 403):
                self.stopped = True
                return


class Sock(WSListener):
    def __init__(self, peer: Peer):
        super().__init__()
        self.peer = peer
        self.transport: WSTransport | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.pending = set(peer.spec.streams)
        self.close_code: int | None = None
        self.close_reason = b""
        self.disconnected = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def _set_ready(self) -> None:
        self.peer.ready_at = time.time()
        if not self.ready.done():
            self.ready.set_result(True)
        if self.peer.spec.stalled and self.transport is not None:
            # Stop reading for good: the kernel buffers fill and the server must cope.
            self.transport.underlying_transport.pause_reading()

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT and self.ready.done():
            # The hot path: the receive time and the bytes, nothing else (see the module doc).
            payload = frame.get_payload_as_bytes()
            self.peer.raw.append((time.time(), payload))
            if BENCH_MARK in payload[:20]:
                self.peer.proc.received += 1
            return
        if kind == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code())
            self.close_reason = frame.get_close_message() or b""
            try:  # answer the close as a browser does, then let the TCP connection go
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            except Exception:
                pass
            return
        if kind != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        msg = json.loads(payload)
        type_ = msg.get("type")
        peer = self.peer
        if type_ == "welcome":
            peer.worker = str(msg.get("conn", "")).rsplit("-", 1)[0]
            peer.segments.append((len(peer.raw), peer.worker))
            peer.attempt = 0
            peer.restarting = False
            if self.proc_resumes():
                peer.update_cursors()
            # One subscribe for every stream, as flask_tidings/static/realtime.js sends it.
            entries: list[dict[str, Any]] = []
            for stream in peer.spec.streams:
                entry: dict[str, Any] = {"stream": stream}
                if self.proc_resumes() and stream in peer.cursors:
                    entry["after"] = peer.cursors[stream]
                entries.append(entry)
            if entries:
                request: dict[str, Any] = {"type": "subscribe", "ref": "0"}
                if len(entries) == 1:
                    request.update(entries[0])
                else:
                    request["streams"] = entries
                transport.send(WSMsgType.TEXT, json.dumps(request).encode())
            if not peer.spec.streams:
                self._set_ready()
        elif type_ == "subscribed":
            peer.cursors.setdefault(msg.get("stream"), msg.get("after") or 0)
            self.pending.discard(msg.get("stream"))
            if not self.pending:
                self._set_ready()
        elif type_ == "error":
            if not self.ready.done():
                self.ready.set_exception(RuntimeError(f"subscribe refused: {msg}"))
        else:  # an event of a stream already subscribed (a catch-up) while others still wait
            peer.raw.append((time.time(), payload))
            if type_ == "bench":
                peer.proc.received += 1

    def proc_resumes(self) -> bool:
        return self.peer.proc.reconnecting

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("disconnected before ready"))
        self.peer.lost(self)


async def http_status(url: str, cookie: str, timeout: float = 10.0) -> int:
    """GET ``url`` and return its status (0 when there was no answer): the browser's /ws/check."""
    parts = urlsplit(url)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port or 80), timeout)
    except (OSError, asyncio.TimeoutError):
        return 0
    try:
        writer.write(f"GET {parts.path} HTTP/1.0\r\nHost: {parts.netloc}\r\n"
                     f"User-Agent: {USER_AGENT}\r\nAccept: application/json\r\n"
                     f"Cookie: {cookie}\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        return int(line.split()[1]) if line.startswith(b"HTTP/") else 0
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return 0
    finally:
        writer.close()


class Proc:
    """The peers of one client process and what they received."""

    def __init__(self, url: str, origin: str):
        self.url = url
        self.origin = origin
        self.check_url = origin + urlsplit(url).path.rstrip("/") + "/check"
        #: Reconnect and resume after a loss, as the browser does (storm and multi-host only: the
        #: delivery scenarios count a loss as a loss).
        self.reconnecting = False
        self.peers: list[Peer] = []
        self.received = 0

    def reset(self) -> None:
        self.received = 0
        for peer in self.peers:
            peer.raw = []
            peer.scanned = 0
            peer.close_codes = []
            peer.segments = [(0, peer.worker)]

    async def connect(self, specs: list[Spec]) -> dict[str, Any]:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        errors: list[str] = []

        async def one(spec: Spec) -> None:
            async with gate:
                peer = Peer(spec, self)
                try:
                    sock = await peer.open(READY_TIMEOUT)
                    await asyncio.wait_for(sock.ready, READY_TIMEOUT)
                    self.peers.append(peer)
                except Exception as exc:  # refused handshakes, timeouts: counted, not fatal
                    errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")

        start = time.time()
        await asyncio.gather(*(one(spec) for spec in specs))
        return {"connected": len(self.peers), "failed": len(errors), "errors": errors[:5],
                "seconds": time.time() - start}

    def readiness(self, since: float) -> dict[str, Any]:
        """Which peers are subscribed on a socket that became ready after ``since``."""
        ready = [p.ready_at for p in self.peers
                 if p.ready_at > since and p.sock is not None and not p.sock.disconnected]
        return {"ready": len(ready), "peers": len(self.peers), "last": max(ready, default=0.0),
                "times": ready, "stopped": sum(p.stopped for p in self.peers),
                "connects": sum(p.connects for p in self.peers)}

    def workers(self) -> dict[str, int]:
        """Open sockets per worker that serves them (cheap: no frame is decoded)."""
        out: dict[str, int] = {}
        for peer in self.peers:
            if peer.sock is not None and not peer.sock.disconnected:
                out[peer.worker] = out.get(peer.worker, 0) + 1
        return out

    def report(self, expected: dict[str, list[int]]) -> dict[str, Any]:
        """Loss and duplicates against the ids each stream was expected to deliver; latencies,
        also per worker that delivered them (``lat_by_worker``)."""
        lat: list[float] = []
        by_worker: dict[str, list[float]] = {}
        last_recv, first_ts = 0.0, float("inf")
        ids_of: dict[int, dict[str, list[int]]] = {}
        for peer in self.peers:
            ids: dict[str, list[int]] = {}
            bounds = peer.segments or [(0, peer.worker)]
            for n, (now, payload) in enumerate(peer.raw):
                msg = json.loads(payload)
                if msg.get("type") != "bench":
                    continue
                ids.setdefault(msg["stream"], []).append(msg["id"])
                ms = (now - msg["ts"]) * 1000.0
                lat.append(ms)
                worker = next((w for start, w in reversed(bounds) if start <= n), peer.worker)
                by_worker.setdefault(worker, []).append(ms)
                last_recv = max(last_recv, now)
                first_ts = min(first_ts, msg["ts"])
            ids_of[peer.spec.index] = ids
        wanted = {stream: set(ids) for stream, ids in expected.items()}
        out: dict[str, Any] = {"lost": 0, "dup": 0, "lost_stalled": 0, "healthy": 0,
                               "stalled": 0, "healthy_disconnected": 0, "healthy_lossy": 0,
                               "close_codes": {}, "reach": {}, "workers": {}}
        for peer in self.peers:
            spec = peer.spec
            out["stalled" if spec.stalled else "healthy"] += 1
            out["workers"][peer.worker] = out["workers"].get(peer.worker, 0) + 1
            for key in peer.close_codes:
                out["close_codes"][key] = out["close_codes"].get(key, 0) + 1
            if peer.close_codes and not spec.stalled:
                out["healthy_disconnected"] += 1
            lost_here = 0
            for stream in spec.streams:
                if stream not in wanted:
                    continue
                want = wanted[stream]
                got = [i for i in ids_of[spec.index].get(stream, ()) if i in want]
                distinct = set(got)
                out["dup"] += len(got) - len(distinct)
                lost_here += len(want - distinct)
                if stream == "broadcast" and not spec.stalled:
                    for i in distinct:
                        out["reach"][i] = out["reach"].get(i, 0) + 1
            if spec.stalled:
                out["lost_stalled"] += lost_here
            else:
                out["lost"] += lost_here
                out["healthy_lossy"] += bool(lost_here)
        out.update(lat=lat, received=len(lat), last_recv=last_recv,
                   first_ts=first_ts if lat else None, lat_by_worker=by_worker)
        return out

    def close(self) -> None:
        self.reconnecting = False
        for peer in self.peers:
            peer.stopped = True
            sock = peer.sock
            if sock is not None and sock.transport is not None and not sock.disconnected:
                try:
                    sock.transport.disconnect(graceful=False)
                except Exception:
                    pass


def _child(pipe: Any, url: str, origin: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    asyncio.run(_serve(pipe, url, origin))


async def _serve(pipe: Any, url: str, origin: str) -> None:
    loop = asyncio.get_running_loop()
    proc = Proc(url, origin)
    while True:
        op, arg = await loop.run_in_executor(None, pipe.recv)
        if op == "connect":
            pipe.send(await proc.connect(arg))
        elif op == "reset":
            proc.reset()
            pipe.send(True)
        elif op == "count":
            pipe.send(proc.received)
        elif op == "report":
            # Decoding every frame takes seconds (minutes on a loaded machine): on a thread, so
            # this loop keeps answering the server's pings, or it would cut the sockets off.
            pipe.send(await loop.run_in_executor(None, proc.report, arg))
        elif op == "workers":
            pipe.send(proc.workers())
        elif op == "readiness":
            pipe.send(proc.readiness(arg))
        elif op == "reconnecting":
            proc.reconnecting = bool(arg)
            pipe.send(True)
        elif op == "close":
            proc.close()
            await asyncio.sleep(0.2)
            pipe.send(True)
            return


class Clients:
    """The orchestrator's handle on the client processes (``with Clients(...) as clients``).

    ``url`` is the WebSocket endpoint, ``origin`` the site's own origin (sent as ``Origin``; the
    browser's ``/ws/check`` is asked there). Sockets with a cookie log in with it; the others
    (baseline, reference) say who they are with ``?user=<id>``.
    """

    def __init__(self, url: str, origin: str, processes: int = 2):
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_child, args=(child, url, origin), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self._all("count", timeout=120)  # booted: their start-up is not part of any timing

    def _all(self, op: str, args: list[Any] | None = None, timeout: float = 120.0) -> list[Any]:
        for n, pipe in enumerate(self.pipes):
            pipe.send((op, args[n] if args is not None else None))
        out = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"client process did not answer {op!r} in {timeout}s")
            out.append(pipe.recv())
        return out

    def connect(self, specs: list[Spec]) -> dict[str, Any]:
        shares = [specs[n :: len(self.pipes)] for n in range(len(self.pipes))]
        start = time.time()
        parts = self._all("connect", shares, timeout=300)
        seconds = time.time() - start
        return {"connected": sum(p["connected"] for p in parts),
                "failed": sum(p["failed"] for p in parts),
                "errors": [e for p in parts for e in p["errors"]][:5], "seconds": seconds}

    def reset(self) -> None:
        self._all("reset")

    def reconnecting(self, on: bool) -> None:
        """Reconnect and resume after every loss, as the browser does (or stop doing so)."""
        self._all("reconnecting", [on] * len(self.pipes))

    def readiness(self, since: float) -> dict[str, Any]:
        """How many sockets are subscribed on a socket opened after ``since`` (wall clock)."""
        parts = self._all("readiness", [since] * len(self.pipes))
        return {"ready": sum(p["ready"] for p in parts), "peers": sum(p["peers"] for p in parts),
                "last": max(p["last"] for p in parts), "stopped": sum(p["stopped"] for p in parts),
                "connects": sum(p["connects"] for p in parts),
                "times": sorted(t for p in parts for t in p["times"])}

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs if proc.pid is not None]

    def workers(self) -> dict[str, int]:
        """Open sockets per worker, over all client processes."""
        out: dict[str, int] = {}
        for part in self._all("workers"):
            for worker, n in part.items():
                out[worker] = out.get(worker, 0) + n
        return out

    def count(self) -> int:
        """Measured events received so far, over all client processes."""
        return sum(self._all("count"))

    def wait_for(self, total: int, timeout: float, idle: float = 3.0) -> int:
        """Poll until ``total`` events arrived, nothing arrived for ``idle`` s, or ``timeout``."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            got = self.count()
            if got >= total:
                return got
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > idle:
                return got
            time.sleep(0.1)
        return self.count()

    def report(self, expected: dict[str, list[int]]) -> dict[str, Any]:
        parts = self._all("report", [expected] * len(self.pipes), timeout=900)
        merged: dict[str, Any] = {"lat": [], "reach": {}, "close_codes": {}, "workers": {},
                                  "lat_by_worker": {}}
        for part in parts:
            merged["lat"].extend(part.pop("lat"))
            for worker, values in part.pop("lat_by_worker").items():
                merged["lat_by_worker"].setdefault(worker, []).extend(values)
            for key in ("reach", "close_codes", "workers"):
                for k, v in part.pop(key).items():
                    merged[key][k] = merged[key].get(k, 0) + v
            for key, value in part.items():
                if key == "last_recv":
                    merged[key] = max(merged.get(key, 0.0), value)
                elif key == "first_ts":
                    if value is not None:
                        merged[key] = min(merged.get(key) or value, value)
                else:
                    merged[key] = merged.get(key, 0) + value
        merged.setdefault("first_ts", None)
        return merged

    def close(self) -> None:
        try:
            self._all("close", timeout=20)
        except Exception:
            pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
