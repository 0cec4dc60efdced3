"""Gunicorn settings for Tidings (``gunicorn -c gunicorn.conf.py wsgi:app``).

Each setting reads a ``TIDINGS_*`` environment variable so the same file serves development,
production and the test suite's live server.
"""

import os


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# --- Sockets and processes --------------------------------------------------------------------

bind = os.environ.get("TIDINGS_BIND", "127.0.0.1:8000")

# gthread: each worker serves requests from a thread pool. Every open WebSocket holds one of
# those threads for its whole life (it runs that client's commands; one shared reactor thread per
# worker does all socket I/O), so size threads as sockets + threads kept free for pages:
#
#     threads = REALTIME_MAX_SOCKETS + TIDINGS_HTTP_THREADS
#
# The realtime layer refuses sockets past REALTIME_MAX_SOCKETS with 503 + Retry-After *before*
# the upgrade, so page requests always find one of the TIDINGS_HTTP_THREADS free threads.
worker_class = "gthread"
workers = _int_env("TIDINGS_WORKERS", 1)
http_threads = _int_env("TIDINGS_HTTP_THREADS", 32)
max_sockets = _int_env("REALTIME_MAX_SOCKETS", 1000)
os.environ.setdefault("REALTIME_MAX_SOCKETS", str(max_sockets))
threads = _int_env("TIDINGS_THREADS", max_sockets + http_threads)

# gthread stops accepting connections past this many per worker (idle keep-alive ones
# included): every thread busy, plus headroom for keep-alive connections waiting for a thread.
worker_connections = threads + 100

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


def post_worker_init(worker):
    """On SIGTERM (stop, reload) close WebSockets with 1001 at once, so clients reconnect to a
    live worker and this one exits without waiting out graceful_timeout."""
    from app.realtime.gunicorn import install

    install(worker)


def when_ready(server):
    """Create the demo accounts once, in the arbiter, before any worker starts.

    Doing it here rather than in ``wsgi.py`` means it happens once, not once per worker, and
    the login table is printed once.
    """
    from app.startup import seed_demo_accounts_if_enabled

    seed_demo_accounts_if_enabled(log=server.log.info, url=f"http://{server.cfg.bind[0]}")
