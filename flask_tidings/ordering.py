"""Events of a stream put back in order before the fan-out, when they arrive a moment apart in
the wrong order: no I/O, no thread, no clock of its own.

Two publishers of one stream commit 10 and 11 in that order, but each hands its event to the
broker on its own, and 11 may be announced first (two workers on Redis: nearly every time under
a burst of one broadcast per request). Each of a thousand followers then saw a gap, queued a
catch-up and read the log for an event that came a moment later: with two workers the fan-out
cost 4.6x the CPU per delivery of one worker (issue 18; 1.7x once those reads were shared,
replays.py).

So the hub holds an event that comes ahead of its stream's next one for up to ``wait``
seconds, and lets it go, in order, as soon as the missing one arrives. If it never does (a
broker lost it), the held events go at their deadline and every follower catches up from the
log exactly as before: holding only saves work, it is never what makes delivery complete.
"""

from __future__ import annotations

from collections import OrderedDict

#: Seconds an event ahead of its stream's next one waits for it. Under a burst the other
#: worker's announcement can trail by tens of milliseconds: with two workers, one broadcast per
#: request, 1,000 sockets (bench B, w=2), the CPU per delivery was 7.2 µs holding nothing,
#: 6.4 µs with 20 ms, 5.4 µs with 100 ms. Only an event a broker lost makes followers wait this
#: long (then they read the log, as before).
WAIT = 0.1
#: Streams whose last sequence number is remembered at most (the least recently used go; one
#: that comes back starts again from its next event, which costs at most one catch-up).
TRACKED = 10_000

Item = tuple[int | None, bytes]


class StreamOrder:
    def __init__(self, wait: float = WAIT, tracked: int = TRACKED):
        self.wait = wait
        self.tracked = tracked
        self._last: OrderedDict[str, int] = OrderedDict()
        self._held: dict[str, dict[int, bytes]] = {}
        self._since: dict[str, float] = {}
        #: Events held, and events let go at their deadline without the one they waited for.
        self.held = 0
        self.gave_up = 0

    def arrive(self, stream: str, items: list[Item], now: float) -> list[Item]:
        """``items`` of ``stream`` (arrival order) that may go now, in order; the rest is held."""
        last = self._last.get(stream)
        held = self._held.get(stream)
        ready: list[Item] = []
        for seq, frame in items:
            if seq is None:  # ephemeral: no order to keep
                ready.append((seq, frame))
                continue
            if last is not None and seq > last + 1:
                if held is None:
                    held = self._held[stream] = {}
                    self._since[stream] = now
                held[seq] = frame
                self.held += 1
                continue
            ready.append((seq, frame))
            if last is None or seq == last + 1:
                last = seq
                while held and last + 1 in held:
                    last += 1
                    ready.append((last, held.pop(last)))
            # else: older than the last one let go (late, or a duplicate): followers decide
        if held is not None and not held:
            del self._held[stream]
            del self._since[stream]
        if last is not None:
            self._remember(stream, last)
        return ready

    def due(self, now: float) -> dict[str, list[Item]]:
        """What has waited ``wait`` seconds: every held event of those streams, in order."""
        out: dict[str, list[Item]] = {}
        for stream in [s for s, since in self._since.items() if now - since >= self.wait]:
            held = self._held.pop(stream)
            del self._since[stream]
            out[stream] = _in_order(held)
            self.gave_up += len(held)
            self._remember(stream, max(self._last.get(stream, 0), max(held)))
        return out

    def next_due(self) -> float | None:
        """When the oldest held event is due, or None when nothing is held."""
        return min(self._since.values()) + self.wait if self._since else None

    def forget(self) -> dict[str, list[Item]]:
        """Every stream starts again from its next event (the broker may have lost some);
        returns what was held, to let go now."""
        due = {stream: _in_order(held) for stream, held in self._held.items()}
        self._last.clear()
        self._held.clear()
        self._since.clear()
        return due

    def _remember(self, stream: str, last: int) -> None:
        self._last[stream] = last
        self._last.move_to_end(stream)
        while len(self._last) > self.tracked:
            oldest = next(iter(self._last))
            if oldest in self._held:
                break  # still holding events of it: they go at their deadline first
            del self._last[oldest]


def _in_order(held: dict[int, bytes]) -> list[Item]:
    return [(seq, held[seq]) for seq in sorted(held)]
