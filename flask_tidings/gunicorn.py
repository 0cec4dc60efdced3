"""gunicorn hooks for flask_tidings, as a one-line include in any ``gunicorn.conf.py``::

    from flask_tidings.gunicorn import post_worker_init, worker_exit  # noqa: F401

What the hook does in each worker, once the app is loaded:

- on SIGTERM (stop, reload, scale down) close every socket with 1001 at once, so clients
  reconnect to a live worker and this one exits without waiting out ``graceful_timeout``;
- start serving (reactor, broker listener, sweep) before the first socket arrives, so the
  first event after a restart is not waiting for a broker connection;
- on a clean exit, leave without Python's slow finalization (see :func:`leave`);
- check the broker against the number of workers gunicorn really runs (``-w`` may bypass the
  config): an explicit in-process broker with several workers stops the server with a message;
- move the objects the app was built from out of the garbage collector's sight once booted
  (see :func:`freeze_boot_heap`), so no full collection stalls every thread for tens of ms.

Without the hook sockets still work and events still reach every worker promptly; only the close
on SIGTERM is abrupt (1006 instead of 1001), and a warning says so at the first handshake.

A second line, ``limit_malloc_arenas()`` near the top of the config file, keeps the memory a
worker's many threads hold free small (see :func:`limit_malloc_arenas`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from .extension import process_states, shutdown_all

log = logging.getLogger("tidings.realtime")

#: Set in a worker once :func:`post_worker_init` ran (read by the handshake's warning).
installed = False

#: Heaps glibc's malloc may keep per process for its threads (``M_ARENA_MAX``): see
#: :func:`limit_malloc_arenas`.
MALLOC_ARENAS = 2
#: ``mallopt`` parameter number of ``M_ARENA_MAX`` in glibc's ``<malloc.h>`` (since 2.10).
_M_ARENA_MAX = -8


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap the heaps ("arenas") glibc's malloc spreads this process's threads over; True if set.

    A worker runs some 55 threads (gthread's pool, the command pool, reactor, broker, sweep).
    glibc gives threads their own arena, up to 8 per core, and an arena keeps the memory freed
    in it for its own thread's next allocations: each settles at its own high-water mark plus
    fragmentation. Measured in an 8-minute soak (bench/soak.py ``--memory``, two workers): free
    bytes held by the arenas ~3.5 MB per worker by default, ~0.6 MB with two arenas, RSS 3 MB
    lower; with allocations traced (tracemalloc allocates from every thread) the free bytes grew
    23 -> 58 MB while the bytes in use stayed flat. Python holds the GIL around almost every
    allocation, so its threads gain next to nothing from separate arenas; two keep the SQLite
    work that runs without the GIL off the main heap's lock.

    Assumptions, checked: Linux with glibc (``mallopt``; elsewhere this does nothing and says
    False), and a process that has not started its threads yet: arenas made before the call stay
    (gunicorn's arbiter loads its config file before it forks any worker, and the workers
    inherit the setting). ``MALLOC_ARENA_MAX`` in the environment is the operator's choice and
    wins: glibc read it at start-up, and this leaves it alone.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl has mallopt, but not these arenas
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_ARENA_MAX, int(count)))


def freeze_boot_heap() -> int:
    """Collect once, then freeze every object alive (``gc.freeze``); the count frozen.

    A booted worker holds ~100,000 objects that live as long as it does: modules, the app,
    its blueprints, SQLAlchemy's mappers, Jinja's templates. CPython's collector walks all of
    them in every full (generation 2) collection, which comes when enough young objects have
    survived, and the walk holds the GIL: 28 ms for the bare app, 62 ms measured in a serving
    worker (bench.attacks, one full collection in 73 s), during which no page thread, command
    or the reactor runs: a page or an event caught behind it waits that long. Frozen, they
    sit in a permanent generation the collector skips (the same full collection: 3 ms).

    Collected first, so only live objects are frozen (garbage frozen would never be freed).
    Objects made later (connections, caches filled by traffic) are collected as usual. Call it
    once, after the app is loaded and started, before the worker serves: it is what gunicorn's
    ``post_worker_init`` hook does. Returns the number of objects now frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def post_worker_init(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` hook; calling it from your own hook works too."""
    install(worker)


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``worker_exit`` hook (see :func:`leave`)."""
    leave(worker)


def install(worker: Any) -> None:
    global installed
    for state in process_states():
        try:
            state.adopt_worker_count(int(worker.cfg.workers))
        except RuntimeError as exc:
            worker.log.error("realtime: %s", exc)
            sys.exit(3)  # gunicorn's "worker failed to boot": the arbiter stops with this message
    # Start the realtime layer before the worker accepts its first connection, not on its first
    # handshake: a worker that accepts is ready.
    for state in process_states():
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
    for state in process_states():
        try:
            with state.app.app_context():
                state.ensure_started()
            state.cluster.serving = True  # a worker of the site: it reports to the ops view
        except Exception:
            # A database that is down at boot must not stop the worker: the first handshake
            # tries again.
            log.exception("realtime: could not start serving at boot; will retry on first use")
    frozen = freeze_boot_heap()
    worker.log.info("realtime: worker %d ready; %d objects of the booted app frozen out of "
                    "the garbage collector's full walks", os.getpid(), frozen)
    installed = True


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
    for state in process_states():
        if state.commands is not None and state._started_pid == os.getpid():
            state.commands.shutdown()  # what is queued (disconnect hooks) still runs
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
