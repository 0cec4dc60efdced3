"""gunicorn hooks: close sockets with 1001 on SIGTERM instead of waiting out graceful_timeout.

gunicorn's gthread worker waits for in-flight requests when it stops, and every WebSocket is one
such request that never ends by itself. Call :func:`install` from ``post_worker_init``.
"""

from __future__ import annotations

import signal
from typing import Any

from .extension import shutdown_all


def install(worker: Any) -> None:
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        shutdown_all()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
