"""gunicorn hooks: close sockets with 1001 on SIGTERM instead of waiting out graceful_timeout.

gunicorn's gthread worker waits for in-flight requests when it stops, and every WebSocket is one
such request that never ends by itself. Call :func:`install` from ``post_worker_init`` and
:func:`leave` from ``worker_exit``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
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
    # Start the realtime layer before the worker accepts its first connection, not on its first
    # handshake: a worker that accepts is ready.
    for state in extension._states:
        if state.deliver_live:
            with state.app.app_context():
                state.ensure_started()
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        # Stop accepting first (gunicorn's own handler, then the listeners out of its poller):
        # the clients about to be told "restart" must reconnect to another worker, not queue up
        # here for a refusal. Only then close the sockets with 1001.
        if callable(previous):
            previous(signum, frame)
        stop_accepting = getattr(worker, "set_accept_enabled", None)
        if callable(stop_accepting):
            try:
                stop_accepting(False)
            except (OSError, KeyError, ValueError):
                pass  # already out of the poller
        shutdown_all()

    signal.signal(signal.SIGTERM, on_term)


#: Seconds :func:`leave` waits for client commands still running (a chat message being stored).
COMMANDS_GRACE = 5.0


def leave(worker: Any) -> None:
    """From ``worker_exit``: a worker that stopped cleanly leaves without Python's finalization.

    By now gunicorn has answered its last request and the sockets were closed with 1001. What
    Python would still do on the way out is tear the heap down object by object and join every
    thread pool: 0.6 s of CPU for this site's worker on a lightly loaded machine (strace), and
    CPU work stretches with the load, which is what made a SIGTERM take 8 s on a busy one.
    Commands still running get :data:`COMMANDS_GRACE` to finish, output is flushed, and the
    process ends. A worker exiting because of an error takes the ordinary way out, with its
    status.
    """
    exc = sys.exc_info()[1]
    if not isinstance(exc, SystemExit) or exc.code not in (0, None):
        return
    for state in extension._states:
        if state.commands is not None and state._started_pid == os.getpid():
            state.commands.pool.shutdown(wait=False)  # what is queued (disconnect hooks) still runs
    deadline = time.monotonic() + COMMANDS_GRACE
    for thread in threading.enumerate():
        if thread.name.startswith("tidings-command"):
            thread.join(max(0.0, deadline - time.monotonic()))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)
