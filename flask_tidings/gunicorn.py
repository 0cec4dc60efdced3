"""gunicorn hooks: close sockets with 1001 on SIGTERM instead of waiting out graceful_timeout.

gunicorn's gthread worker waits for in-flight requests when it stops, and every WebSocket is one
such request that never ends by itself. Call :func:`install` from ``post_worker_init``.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from . import extension
from .extension import shutdown_all

log = logging.getLogger("tidings.realtime")


def install(worker: Any) -> None:
    # Choose the broker from the number of workers gunicorn really runs: with several workers an
    # in-process broker would confine messages to one of them.
    for state in extension._states:
        try:
            state.adopt_worker_count(int(worker.cfg.workers))
        except RuntimeError as exc:
            worker.log.error("realtime: %s", exc)
            sys.exit(3)  # gunicorn's "worker failed to boot": the arbiter stops with this message
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        shutdown_all()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
