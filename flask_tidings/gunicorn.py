"""gunicorn hooks for flask_tidings, as a one-line include in any ``gunicorn.conf.py``::

    from flask_tidings.gunicorn import post_worker_init  # noqa: F401

What the hook does in each worker, once the app is loaded:

- on SIGTERM (stop, reload, scale down) close every socket with 1001 at once, so clients
  reconnect to a live worker and this one exits without waiting out ``graceful_timeout``;
- start serving (reactor, broker listener, sweep) before the first socket arrives, so the
  first event after a restart is not waiting for a broker connection;
- check the broker against the number of workers gunicorn really runs (``-w`` may bypass the
  config): an explicit in-process broker with several workers stops the server with a message.

Without the hook sockets still work and events still reach every worker promptly; only the close
on SIGTERM is abrupt (1006 instead of 1001), and a warning says so at the first handshake.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from .extension import process_states, shutdown_all

log = logging.getLogger("tidings.realtime")

#: Set in a worker once :func:`post_worker_init` ran (read by the handshake's warning).
installed = False


def post_worker_init(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` hook; calling it from your own hook works too."""
    install(worker)


def install(worker: Any) -> None:
    global installed
    for state in process_states():
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
    for state in process_states():
        try:
            with state.app.app_context():
                state.ensure_started()
            state.cluster.serving = True  # a worker of the site: it reports to the ops view
        except Exception:
            # A database that is down at boot must not stop the worker: the first handshake
            # tries again.
            log.exception("realtime: could not start serving at boot; will retry on first use")
    installed = True
