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
import resource
import time
from dataclasses import dataclass
from typing import Any

from picows import WSListener, WSMsgType, WSTransport, ws_connect

#: Sent on every handshake; the session identifier Flask-Login checks is computed for it too.
USER_AGENT = "tidings-bench/1"
#: Handshakes in flight per process: enough to connect fast, few enough not to overflow backlogs.
CONNECT_CONCURRENCY = 100
#: Seconds one socket may take from TCP connect to its last "subscribed" reply.
READY_TIMEOUT = 60.0
#: What the start of a measured event's frame holds, in Tidings' envelope (``{"type":"bench",``)
#: and the baseline's (``{"type": "bench",``): enough to count arrivals without decoding them.
BENCH_MARK = b'"bench"'


@dataclass
class Spec:
    """One socket to open: who it is and what it follows."""

    index: int
    user: int
    cookie: str  # "" for the baseline (it has no auth)
    streams: tuple[str, ...]
    stalled: bool = False


class Sock(WSListener):
    def __init__(self, spec: Spec, proc: Proc, protocol: str):
        super().__init__()
        self.spec = spec
        self.proc = proc
        self.protocol = protocol
        self.transport: WSTransport | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.pending = set(spec.streams)
        #: (receive time, payload) of every text frame since the socket became ready.
        self.raw: list[tuple[float, bytes]] = []
        self.close_code: int | None = None
        self.disconnected = False
        self.worker = ""

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.protocol == "naive":  # the baseline sends everything to everyone; nothing to ask
            self._set_ready()

    def _set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(True)
        if self.spec.stalled and self.transport is not None:
            # Stop reading for good: the kernel buffers fill and the server must cope.
            self.transport.underlying_transport.pause_reading()

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT and self.ready.done():
            # The hot path: the receive time and the bytes, nothing else (see the module doc).
            payload = frame.get_payload_as_bytes()
            self.raw.append((time.time(), payload))
            if BENCH_MARK in payload[:20]:
                self.proc.received += 1
            return
        if kind == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code())
            return
        if kind != WSMsgType.TEXT:
            return
        msg = json.loads(frame.get_payload_as_bytes())
        type_ = msg.get("type")
        if type_ == "welcome":
            self.worker = str(msg.get("conn", "")).rsplit("-", 1)[0]
            for n, stream in enumerate(self.spec.streams):
                transport.send(WSMsgType.TEXT, json.dumps(
                    {"type": "subscribe", "stream": stream, "ref": str(n)}).encode())
            if not self.spec.streams:
                self._set_ready()
        elif type_ == "subscribed":
            self.pending.discard(msg.get("stream"))
            if not self.pending:
                self._set_ready()
        elif type_ == "error" and not self.ready.done():
            self.ready.set_exception(RuntimeError(f"subscribe refused: {msg}"))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("disconnected before ready"))


class Proc:
    """The sockets of one client process and what they received."""

    def __init__(self, url: str, origin: str, protocol: str):
        self.url = url
        self.origin = origin
        self.protocol = protocol
        self.socks: list[Sock] = []
        self.reset()

    def reset(self) -> None:
        self.received = 0
        for sock in getattr(self, "socks", []):
            sock.raw = []

    async def connect(self, specs: list[Spec]) -> dict[str, Any]:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        errors: list[str] = []

        async def one(spec: Spec) -> None:
            async with gate:
                headers = {"User-Agent": USER_AGENT, "Origin": self.origin}
                if spec.cookie:
                    headers["Cookie"] = spec.cookie
                url = self.url if self.protocol == "tidings" else f"{self.url}?user={spec.user}"
                holder: list[Sock] = []

                def factory() -> Sock:
                    holder.append(Sock(spec, self, self.protocol))
                    return holder[0]

                try:
                    await ws_connect(factory, url, extra_headers=headers,
                                     websocket_handshake_timeout=READY_TIMEOUT)
                    await asyncio.wait_for(holder[0].ready, READY_TIMEOUT)
                    self.socks.append(holder[0])
                except Exception as exc:  # refused handshakes, timeouts: counted, not fatal
                    errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")

        start = time.time()
        await asyncio.gather(*(one(spec) for spec in specs))
        return {"connected": len(self.socks), "failed": len(errors), "errors": errors[:5],
                "seconds": time.time() - start}

    def report(self, expected: dict[str, list[int]]) -> dict[str, Any]:
        """Loss and duplicates against the ids each stream was expected to deliver."""
        lat: list[float] = []
        last_recv, first_ts = 0.0, float("inf")
        ids_of: dict[Sock, dict[str, list[int]]] = {}
        for sock in self.socks:
            ids: dict[str, list[int]] = {}
            for now, payload in sock.raw:
                msg = json.loads(payload)
                if msg.get("type") != "bench":
                    continue
                ids.setdefault(msg["stream"], []).append(msg["id"])
                lat.append((now - msg["ts"]) * 1000.0)
                last_recv = max(last_recv, now)
                first_ts = min(first_ts, msg["ts"])
            ids_of[sock] = ids
        wanted = {stream: set(ids) for stream, ids in expected.items()}
        out: dict[str, Any] = {"lost": 0, "dup": 0, "lost_stalled": 0, "healthy": 0,
                               "stalled": 0, "healthy_disconnected": 0, "healthy_lossy": 0,
                               "close_codes": {}, "reach": {}, "workers": {}}
        for sock in self.socks:
            spec = sock.spec
            out["stalled" if spec.stalled else "healthy"] += 1
            out["workers"][sock.worker] = out["workers"].get(sock.worker, 0) + 1
            if sock.close_code is not None or sock.disconnected:
                key = str(sock.close_code or "no-close-frame")
                out["close_codes"][key] = out["close_codes"].get(key, 0) + 1
                if not spec.stalled:
                    out["healthy_disconnected"] += 1
            lost_here = 0
            for stream in spec.streams:
                if stream not in wanted:
                    continue
                want = wanted[stream]
                got = [i for i in ids_of[sock].get(stream, ()) if i in want]
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
                   first_ts=first_ts if lat else None)
        return out

    def close(self) -> None:
        for sock in self.socks:
            if sock.transport is not None and not sock.disconnected:
                try:
                    sock.transport.disconnect(graceful=False)
                except Exception:
                    pass


def _child(pipe: Any, url: str, origin: str, protocol: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    asyncio.run(_serve(pipe, url, origin, protocol))


async def _serve(pipe: Any, url: str, origin: str, protocol: str) -> None:
    loop = asyncio.get_running_loop()
    proc = Proc(url, origin, protocol)
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
            pipe.send(proc.report(arg))
        elif op == "close":
            proc.close()
            await asyncio.sleep(0.2)
            pipe.send(True)
            return


class Clients:
    """The orchestrator's handle on the client processes (``with Clients(...) as clients``)."""

    def __init__(self, url: str, origin: str, protocol: str, processes: int = 2):
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_child, args=(child, url, origin, protocol), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

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

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs if proc.pid is not None]

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
        parts = self._all("report", [expected] * len(self.pipes))
        merged: dict[str, Any] = {"lat": [], "reach": {}, "close_codes": {}, "workers": {}}
        for part in parts:
            merged["lat"].extend(part.pop("lat"))
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
