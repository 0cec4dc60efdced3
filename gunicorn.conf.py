"""Gunicorn settings for Tidings (``gunicorn -c gunicorn.conf.py wsgi:app``).

Each setting reads a ``TIDINGS_*`` environment variable so the same file serves development,
production and the test suite's live server.
"""

import os
import resource


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# --- Memory -------------------------------------------------------------------------------------

# At most two glibc malloc arenas per process, set here in the arbiter before any worker (or
# thread) exists, so every worker inherits it. With the default (8 per core) each of a worker's
# ~55 threads gets a heap of its own that keeps the memory freed in it: ~3.5 MB per worker held
# free in a soak instead of ~0.6 MB, and far more when allocations come from many threads
# (docs/reliability.md, "Soak"). MALLOC_ARENA_MAX in the environment overrides this.
from flask_tidings.gunicorn import limit_malloc_arenas  # noqa: E402

limit_malloc_arenas()

# --- Sockets and processes --------------------------------------------------------------------

bind = os.environ.get("TIDINGS_BIND", "127.0.0.1:8000")

# gthread: each worker serves requests from a thread pool. A WebSocket does NOT keep its thread:
# after the handshake the realtime layer takes the connection over (flask_tidings/views.py,
# adopt_socket), one reactor thread per worker does all socket I/O and a small command pool
# (REALTIME_COMMAND_THREADS, 16) runs client commands. So `threads` is sized for pages alone,
# and the sockets a worker holds are bounded by admission control instead: past
# REALTIME_MAX_SOCKETS the handshake gets 503 + Retry-After, and pages keep loading.
worker_class = "gthread"
workers = _int_env("TIDINGS_WORKERS", 1)
threads = _int_env("TIDINGS_THREADS", 32)

# gthread stops accepting connections past this many per worker: every thread busy plus
# keep-alive connections waiting for one. Adopted WebSockets do not count here.
worker_connections = threads + 200

# Every socket is a file descriptor: let the processes use the hard limit, not the usual soft
# 1,024, so admission control (not EMFILE) is what bounds a worker.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))

# --- Timeouts -----------------------------------------------------------------------------------

# On SIGTERM, workers get this long to finish in-flight requests before they are killed; short,
# because open WebSockets never "finish" and clients reconnect anyway.
graceful_timeout = 10
# Seconds an idle keep-alive connection is held open waiting for the next request.
keepalive = 5

# --- Logging ------------------------------------------------------------------------------------

accesslog = "-"  # stdout
errorlog = "-"  # stderr

# --- Control socket -----------------------------------------------------------------------------

# Gunicorn's control socket defaults to one path per user, so two servers on one machine (the
# test suite's live servers, a dev server) would fight over it. Opt in with a path of your own.
if os.environ.get("TIDINGS_CONTROL_SOCKET"):
    control_socket = os.environ["TIDINGS_CONTROL_SOCKET"]
else:
    control_socket_disable = True


# --- Hooks ----------------------------------------------------------------------------------------

# The realtime layer's worker hooks: sockets closed with 1001 on SIGTERM, serving started at boot,
# a clean exit without Python's slow teardown.
from flask_tidings.gunicorn import post_worker_init, worker_exit  # noqa: E402, F401


def when_ready(server):
    """Create the demo accounts once, before any worker starts, in a child of the arbiter.

    Doing it here rather than in ``wsgi.py`` means it happens once, not once per worker, and
    the login table is printed once. In a child process, because the arbiter must not import
    the app itself: its workers would inherit those modules (a HUP reload would then keep
    serving the old code), and the arbiter would tear that heap down on every stop (0.5-1 s).
    """
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            from app.startup import DemoAccountsExposed, seed_demo_accounts_if_enabled

            try:
                seed_demo_accounts_if_enabled(
                    log=server.log.info, url=f"http://{server.cfg.bind[0]}"
                )
            except DemoAccountsExposed as exc:
                server.log.error("%s", exc)
                status = _EXPOSED
        except BaseException:
            server.log.exception("Demo accounts not created")
            status = 1
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == _EXPOSED:
        # Serving would put the published demo passwords in reach of others: stop here.
        raise SystemExit("Demo accounts refused on a site others can reach (see above).")


#: The start-up child's exit status for "demo accounts would be exposed".
_EXPOSED = 3
