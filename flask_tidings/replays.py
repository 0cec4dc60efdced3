"""Log reads that a crowd of catch-ups shares: one read of a stream from a cursor, for everyone
resuming from that cursor within a second. No I/O here.

After a restart every client resumes, and nearly all of them from the same cursor: they were
all live, so each had seen the stream's newest event when its socket closed. Each catch-up read
the same rows of ``broadcast`` from the database and encoded the same frames: 14% of a worker's
time while 5,000 clients came back (py-spy, issue 18), and one query per client on a database
that several hosts share.

A read is remembered for :data:`FRESH` seconds under ``(stream, cursor)``. Reusing it is the
same as having read the log a moment earlier, which the catch-up already allows for (events
committed after a read arrive live, or by the next read), with one exception it must not meet:
a read from before an event the caller already knows of. The catch-up treats "no row although
the head is past the cursor" as "pruned by retention" and resets the client. So a remembered
read is used only if it reaches the head the caller knows, or fills the whole page (the caller
then reads on from the last row). Rows are the log's own: nothing is remembered that the
database did not return, and what retention prunes afterwards is at most :data:`FRESH` seconds
late to show.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

#: Seconds a read is shared.
FRESH = 1.0
#: Bytes of frames kept at most, and reads kept at most, whatever their size.
MAX_BYTES = 8 * 1024 * 1024
MAX_READS = 256

Rows = list[tuple[int, bytes]]


class SharedReads:
    """Reads of the log by ``(stream, cursor)``: rows of ``(seq, frame)``, oldest first."""

    def __init__(self, fresh: float = FRESH, max_bytes: int = MAX_BYTES,
                 max_reads: int = MAX_READS):
        self.fresh = fresh
        self.max_bytes = max_bytes
        self.max_reads = max_reads
        self._lock = threading.Lock()
        self._reads: OrderedDict[tuple[str, int], tuple[float, int, Rows]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, stream: str, after: int, page: int, known: int,
            now: float | None = None) -> Rows | None:
        """Rows after ``after`` read less than :attr:`fresh` seconds ago, if they reach
        ``known`` (the newest seq the caller knows was committed) or fill ``page``; else None."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._reads.get((stream, after))
            if entry is not None:
                read_at, _, rows = entry
                usable = now - read_at < self.fresh and (
                    len(rows) >= page or (rows[-1][0] if rows else after) >= known
                )
                if usable:
                    self.hits += 1
                    return rows if len(rows) <= page else rows[:page]
            self.misses += 1
            return None

    def put(self, stream: str, after: int, rows: Rows, now: float | None = None) -> None:
        """Remember a read the log just answered: ``rows`` after ``after``, consecutive."""
        now = time.monotonic() if now is None else now
        size = sum(len(frame) for _, frame in rows)
        if size > self.max_bytes // 4:
            return  # one huge read would push every other out
        with self._lock:
            old = self._reads.pop((stream, after), None)
            if old is not None:
                self._bytes -= old[1]
            self._reads[(stream, after)] = (now, size, rows)
            self._bytes += size
            while self._reads and (
                self._bytes > self.max_bytes or len(self._reads) > self.max_reads
                or next(iter(self._reads.values()))[0] <= now - self.fresh
            ):
                _, (_, dropped, _) = self._reads.popitem(last=False)
                self._bytes -= dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._reads)
