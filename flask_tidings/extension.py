"""The ``Realtime`` Flask extension: settings, per-app state and the public publishing API."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

from flask import Flask, current_app, has_app_context, has_request_context
from markupsafe import Markup
from sqlalchemy import create_engine
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, scoped_session

from . import settings as defaults
from .admission import Admission, AdmissionLimits
from .adoption import check_server_support
from .brokers import Broker, DatabaseBroker, MemoryBroker, PostgresBroker, RedisBroker
from .cluster import ClusterReporter
from .commands import CommandRunner
from .connection import SIGNED_OUT, Connection, Identity, Limits
from .hub import Hub
from .identities import IdentityCache
from .local import LocalBroker, site_directory
from .reactor import Reactor
from .replays import SharedReads
from .store import KEY_LENGTH, Event, EventStore, envelope, site_identity

log = logging.getLogger("tidings.realtime")

IdentityLoader = Callable[[], "Identity | None"]
#: ``fn(session_id) -> user | row | Identity | None``: see :meth:`Realtime.session_loader`.
SessionLoader = Callable[[str], Any]
Authorizer = Callable[[Identity, str], bool]
Handler = Callable[[Connection, Any], Any]

_reactor: Reactor | None = None
_reactor_lock = threading.Lock()
#: Every app's state, weakly: what a gunicorn hook (which has no app in hand) acts on. A state
#: records the process that made it, so a forked worker never takes its parent's (the arbiter's
#: throwaway app, say) for its own.
_live: weakref.WeakSet[RealtimeState] = weakref.WeakSet()


def process_reactor() -> Reactor:
    """The one reactor of this process (re-created in a forked child, which has no threads)."""
    global _reactor
    with _reactor_lock:
        if _reactor is None or _reactor.pid != os.getpid():
            _reactor = Reactor()
        return _reactor


def process_states(ext: Realtime | None = None) -> list[RealtimeState]:
    """The states this process owns: made here, or inherited through a fork when none was made
    here (gunicorn ``--preload`` builds the app once, before forking the workers)."""
    states = [s for s in list(_live) if ext is None or s.ext is ext]
    here = [s for s in states if s.pid == os.getpid()]
    return here or states


def shutdown_all() -> None:
    """Stop admitting sockets and close every open one with 1001 (SIGTERM, reload)."""
    for state in process_states():
        state.accepting = False
    if _reactor is not None and _reactor.pid == os.getpid():
        _reactor.shutdown()


class RealtimeError(Exception):
    """Raise from a command handler to answer the client with an error frame."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


#: What a user id may look like on a stream name: short, no separators or spaces.
_USER_ID = re.compile(r"[A-Za-z0-9_.@-]{1,100}")
#: Stream names: ``prefix:rest`` or a bare word, printable, no spaces.
_STREAM = re.compile(r"[A-Za-z0-9_.:@-]{1,200}")
_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Idempotency keys: printable ASCII without spaces (a UUID, a form's token), 1-128 characters.
_KEY = re.compile(r"[\x21-\x7e]{1,%d}" % KEY_LENGTH)


def check_key(key: Any) -> str | None:
    """An idempotency key as given, ``None`` for none; anything else is a ``ValueError``.

    Sites can call it on an ``Idempotency-Key`` header to answer 400 before doing any work.
    """
    if key is None:
        return None
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(
            f"an idempotency key is 1-{KEY_LENGTH} printable ASCII characters without spaces, "
            f"not {key!r:.60}"
        )
    return key


def _user_id(user: Any) -> str:
    """The id of a user object, or an id given as such; anything else is a ``TypeError``.

    Streams are named after it and stored for good, so a mistake here (a row, a dict holding a
    password hash, an anonymous user's ``None``) must fail loudly instead of becoming a stream.
    """
    if isinstance(user, bool) or user is None:
        raise TypeError(f"a user or a user id is needed, not {user!r}")
    if isinstance(user, int):
        value = str(user)
    elif isinstance(user, str):
        value = user
    elif hasattr(user, "id") and not isinstance(user, dict):
        # ``id`` first: Flask-Login's ``get_id()`` may carry more than the id (a session version).
        return _user_id(user.id)
    elif hasattr(user, "get_id"):
        return _user_id(user.get_id())
    else:
        raise TypeError(
            f"a user object (with .id or .get_id()) or a user id (int or str) is needed, not a "
            f"{type(user).__name__}; for a row or a dict pass its id, e.g. notify(row['id'], ...)"
        )
    if not _USER_ID.fullmatch(value):
        raise ValueError(f"{value[:40]!r} is not a user id (letters, digits, _ . @ -; 1-100)")
    return value


def user_stream(user: Any) -> str:
    """``user:<id>``, the private stream every tab of that user follows."""
    return f"user:{_user_id(user)}"


def _check_event(stream: Any, type_: Any, data: Any) -> str:
    """Validate a publish's arguments; returns ``data`` as JSON text would see it (a check)."""
    if not isinstance(stream, str) or not _STREAM.fullmatch(stream):
        raise ValueError(
            f"stream must be a name like 'user:7', 'broadcast' or 'room:3' (letters, digits, "
            f"_ . : @ -; 1-200), not {stream!r:.60}"
        )
    if not isinstance(type_, str) or not _TYPE.fullmatch(type_):
        raise ValueError(f"type must be a short name like 'notification', not {type_!r:.60}")
    try:
        return json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"data must be JSON-serializable: {exc}") from None


def as_identity(value: Any) -> Identity | None:
    """What an identity loader returned, as an :class:`Identity`.

    Loaders may return an ``Identity``, ``None`` (nobody logged in), or a user object or row: its
    ``id`` (or ``get_id()``), ``username`` (or ``name``) and ``role`` (or ``roles``) are used.
    """
    if value is None or isinstance(value, Identity):
        return value
    if hasattr(value, "keys") and not hasattr(value, "id"):
        # A database row (sqlite3.Row, a dict, SQLAlchemy's RowMapping): only these fields are
        # read, so the rest of the row (a password hash) goes nowhere.
        keys = set(value.keys())
        fields = {k: value[k] for k in ("id", "username", "name", "role", "roles") if k in keys}
        if fields.get("id") is None:
            raise TypeError("an identity loader returned a row without an 'id' column")
        value = SimpleNamespace(**fields)
    if getattr(value, "is_authenticated", True) is False:
        return None
    roles: set[str] = set()
    role = getattr(value, "role", None)
    if role:
        roles.add(str(role))
    roles.update(str(r) for r in getattr(value, "roles", None) or ())
    name = getattr(value, "username", None) or getattr(value, "name", "") or ""
    return Identity(_user_id(value), str(name), frozenset(roles))


def default_identity() -> Identity | None:
    """Who is logged in, from Flask-Login; sites without it register their own loader."""
    from flask_login import current_user

    if not hasattr(current_app, "login_manager"):
        raise RuntimeError(
            "flask_tidings uses Flask-Login's current_user to tell who opens a socket, but this "
            "app has no LoginManager: init Flask-Login, or register @realtime.identity_loader."
        )
    return as_identity(current_user._get_current_object())


class RealtimeState:
    """Everything one app needs in one process; lives in ``app.extensions["realtime"]``."""

    #: The process whose ``broker`` this is (a forked child makes its own).
    _broker_pid = 0
    _site_id: str | None = None
    _stopping: threading.Event | None = None

    def __init__(self, ext: Realtime, app: Flask, store: EventStore):
        self.ext = ext
        self.app = app
        self.store = store
        self.pid = os.getpid()
        self.config = {k[9:]: v for k, v in app.config.items() if k.startswith("REALTIME_")}
        self.limits = Limits(
            max_message_bytes=int(self.config["MAX_MESSAGE_BYTES"]),
            outbox_bytes=int(self.config["OUTBOX_BYTES"]),
            send_timeout=float(self.config["SEND_TIMEOUT"]),
            heartbeat=float(self.config["HEARTBEAT"]),
            rate=float(self.config["RATE"]),
            burst=int(self.config["BURST"]),
            flood_close_after=int(self.config["FLOOD_CLOSE_AFTER"]),
            max_fragments=int(self.config["MAX_FRAGMENTS"]),
            message_timeout=float(self.config["MESSAGE_TIMEOUT"]),
            restart_rate=float(self.config["RESTART_RATE"]),
            restart_window=float(self.config["RESTART_WINDOW"]),
        )
        self.hub = Hub()
        self.shared_reads = SharedReads()
        self.identities = IdentityCache(float(self.config["IDENTITY_CACHE_SECONDS"]))
        self.accepting = True
        self.admission = Admission(
            AdmissionLimits(
                capacity=int(self.config["MAX_SOCKETS"]),
                per_user=int(self.config["MAX_SOCKETS_PER_USER"]),
                per_address=int(self.config["MAX_SOCKETS_PER_ADDRESS"]),
                handshakes_per_minute=int(self.config["HANDSHAKES_PER_MINUTE"]),
                handshakes_per_minute_per_address=int(
                    self.config["HANDSHAKES_PER_MINUTE_PER_ADDRESS"]
                ),
                retry_after=int(self.config["RETRY_AFTER"]),
                user_rate=float(self.config["USER_RATE"]),
                user_burst=int(self.config["USER_BURST"]),
            )
        )
        self.refused_capacity = 0
        self.refused_auth = 0
        self.opened = 0
        self.closed = 0
        self.close_codes: dict[str, int] = {}
        self._started_pid: int | None = None
        self._broker_pid: int | None = None
        self._start_lock = threading.Lock()
        self.broker_kind = self._choose_broker_kind()
        self.broker: Broker | None = None
        #: False for a throwaway app (start-up seeding in gunicorn's arbiter): events are stored
        #: but no threads start; clients pick them up from the log when they connect.
        self.deliver_live = True
        self.reactor: Reactor | None = None
        self.commands: CommandRunner | None = None
        self._previous_heads: dict[str, int] = {}
        self.worker = ""
        # ops (issue 9): cross-worker figures; reports start with the broker in ensure_started.
        self.cluster = ClusterReporter(self, float(self.config["CLUSTER_INTERVAL"]))
        self.cluster.on_tick(self._run_tick_hooks)

    def _run_tick_hooks(self, _reporter: ClusterReporter) -> None:
        for fn in list(self.ext._tick_hooks):
            try:
                with self.app.app_context():
                    fn()
            except Exception:
                log.exception("realtime tick hook failed")

    # ------------------------------------------------------------------ start-up (per process)

    def _choose_broker_kind(self) -> str:
        kind = self.config["BROKER"]
        workers = int(self.config["WORKERS"])
        redis_url = self.config["REDIS_URL"]
        if kind == "auto":
            if redis_url:
                kind = "redis"
            elif self.store.engine.dialect.name == "postgresql":
                kind = "postgres"
            else:
                # SQLite: every process of the site is on this host (see local.py).
                kind = "local"
        if kind == "memory" and workers > 1:
            raise RuntimeError(
                f"REALTIME_BROKER=memory cannot serve {workers} workers: a message published in "
                "one worker would never reach sockets held by another. Set REDIS_URL (or "
                "REALTIME_BROKER=redis), use REALTIME_BROKER=database, or run one worker."
            )
        if kind == "redis" and not redis_url:
            raise RuntimeError("REALTIME_BROKER=redis needs REALTIME_REDIS_URL or REDIS_URL.")
        if kind == "postgres" and self.store.engine.dialect.name != "postgresql":
            raise RuntimeError("REALTIME_BROKER=postgres needs the durable log in PostgreSQL.")
        if kind not in ("memory", "local", "redis", "database", "postgres"):
            raise RuntimeError(
                f"Unknown REALTIME_BROKER {kind!r}: use auto, local, memory, redis, postgres "
                "or database."
            )
        return kind

    def adopt_worker_count(self, workers: int) -> None:
        """gunicorn tells us how many workers really run (``-w`` may bypass the config)."""
        if workers > int(self.config["WORKERS"]) and self._started_pid is None:
            self.config["WORKERS"] = workers
            self.broker_kind = self._choose_broker_kind()

    @property
    def site_id(self) -> str:
        """What tells this site's broker messages from another's: ``REALTIME_SITE_ID``, else
        a hash of the durable log's database (the same for every process of the site)."""
        if self._site_id is None:
            configured = self.config.get("SITE_ID")
            self._site_id = str(configured) if configured else site_identity(self.store.engine.url)
        return self._site_id

    @property
    def channel(self) -> str:
        """Redis channel / PostgreSQL NOTIFY channel: ``REALTIME_REDIS_CHANNEL``, else one of
        this site's own, so sites sharing a Redis are apart without any setting."""
        return str(self.config.get("REDIS_CHANNEL") or f"tidings-{self.site_id}")

    def _make_broker(self) -> Broker:
        if self.broker_kind == "redis":
            return RedisBroker(self.config["REDIS_URL"], self.channel, self.site_id,
                               float(self.config["BROKER_TIMEOUT"]))
        if self.broker_kind == "postgres":
            return PostgresBroker(self.store, self.channel, self.site_id)
        if self.broker_kind == "database":
            return DatabaseBroker(self.store, float(self.config["POLL_INTERVAL"]))
        if self.broker_kind == "local":
            return LocalBroker(self._local_directory())
        return MemoryBroker()

    def ensure_publishing(self) -> Broker:
        """The broker, ready to send from this process: all a CLI command or job needs.

        A process that serves (a request is running) or whose broker is the in-process one gets
        everything (:meth:`ensure_started`); any other only sends, with no listener, reactor
        or sweep of its own, like a write-only Socket.IO ``message_queue`` client.
        """
        if self.broker_kind == "memory" or has_request_context():
            self.ensure_started()
        pid = os.getpid()
        if self._broker_pid != pid:
            with self._start_lock:
                if self._broker_pid != pid:
                    self.broker = self._make_broker()
                    self._broker_pid = pid
        assert self.broker is not None
        return self.broker

    def _local_directory(self) -> str:
        configured = self.config.get("LOCAL_DIR")
        url = self.store.engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            identity = os.path.realpath(url.database)
        else:  # one process's private database: only this process can publish to it anyway
            identity = f"{url.render_as_string(hide_password=True)}#{os.getpid()}"
        return site_directory(identity, configured or None)

    @property
    def serving(self) -> bool:
        return self._started_pid == os.getpid()

    def ensure_started(self) -> None:
        """Serve sockets in this process: reactor, command pool, broker listener and sweep.

        Started by the first handshake (or any request), or at once by the gunicorn hook.
        Publishing from a command or job never starts any of it (see :meth:`ensure_publishing`).
        A serving process waits (at most ``REALTIME_BROKER_READY_TIMEOUT``) for its broker to
        connect before it goes on: until then an event published by another worker could not
        reach it, and its first report would tell the cluster it is disconnected.
        """
        pid = os.getpid()
        if has_request_context():
            # ops (issue 9): only processes serving the site report to the cluster, not a CLI
            # command or a job queue that merely publishes through the same broker.
            self.cluster.serving = True
        if self._started_pid == pid:
            return
        with self._start_lock:
            if self._started_pid == pid:
                return
            self.worker = f"{os.uname().nodename}:{pid}"
            self.hub = Hub()
            self.identities = IdentityCache(self.identities.ttl)
            self.reactor = process_reactor()
            self.commands = CommandRunner(self.ext, self, int(self.config["COMMAND_THREADS"]))
            if self._broker_pid != pid:
                self.broker = self._make_broker()
                self._broker_pid = pid
            assert self.broker is not None
            self.broker.start(self._deliver, self._resync)
            self._stopping = threading.Event()
            threading.Thread(target=self._sweep_forever, name="tidings-sweep", daemon=True).start()
            if not self.broker.ready.wait(float(self.config["BROKER_READY_TIMEOUT"])):
                log.warning("realtime broker %s not connected yet; serving anyway (the sweep "
                            "delivers from the log until it is)", self.broker_kind)
            self._started_pid = pid
            self.cluster.start(pid)  # ops (issue 9): report this worker's figures to the others

    def stop(self) -> None:
        """Stop this process's broker, sweeper and cluster reports (tests, a finished job).

        Open sockets are not touched: :func:`shutdown_all` closes those.
        """
        if self._stopping is not None:
            self._stopping.set()
        if self.broker is not None and self._broker_pid == os.getpid():
            self.broker.stop()
        self.cluster.stop()
        self.hub.close()
        if self.commands is not None:
            self.commands.shutdown(cancel=True)
        self._started_pid = None
        self._broker_pid = 0

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        events = [
            (m["stream"], m.get("seq"), m["payload"]) for m in messages if m.get("k") == "event"
        ]
        if events:
            self.hub.dispatch(events)
        for message in messages:
            if message.get("k") == "control":
                self._control(message)
            for listener in self.ext._listeners:
                try:
                    listener(self, message)
                except Exception:
                    log.exception("realtime listener failed")

    def _resync(self) -> None:
        """The broker may have lost messages (a reconnect): a disconnect among them would leave
        a revoked session remembered, so forget every session; the sweep catches streams up."""
        self.identities.clear()
        self.hub.forget_order()
        self.sweep(immediate=True)

    def _control(self, message: dict[str, Any]) -> None:
        if message.get("op") == "disconnect_user":
            code = int(message.get("code", SIGNED_OUT))
            reason = str(message.get("reason", ""))
            # First: a handshake from now on loads the user again (and finds the session gone).
            self.identities.forget_user(str(message["user"]))
            # Remembered with the time, so a handshake still in flight is closed on arrival.
            for conn in self.hub.disconnect_user(
                str(message["user"]), code, reason, time.monotonic()
            ):
                conn.close(code, reason)
        elif message.get("op") == "stats":
            self.cluster.receive(message)  # ops (issue 9): another worker's figures

    def sweep(self, immediate: bool = False) -> None:
        """Compare every followed stream with the log; connections that fell behind catch up.

        Pushes normally arrive well before the next sweep, so a connection is only nudged towards
        the heads seen one sweep *ago*: events still in flight (a burst being fanned out) are not
        read twice. After a broker outage (``immediate``) the current heads are used at once.
        Every follower is nudged, head or not: a stream whose catch-up failed (a database
        error) is retried from here, so no failure leaves a stream silent for good.
        """
        followed = self.hub.followed_streams()
        if not followed:
            self._previous_heads = {}
            return
        heads = self.store.heads(list(followed))
        target = heads if immediate else self._previous_heads
        self._previous_heads = heads
        for name, conns in followed.items():
            head = target.get(name, 0)
            for conn in conns:
                conn.nudge(name, head)

    def prune(self) -> int:
        """Apply the retention policy to the durable log once; returns the rows deleted."""
        age = float(self.config["RETENTION_SECONDS"] or 0)
        count = int(self.config["RETENTION_PER_STREAM"] or 0)
        if not age and not count:
            return 0
        return self.store.prune(
            age or None,
            count or None,
            batch=int(self.config["RETENTION_BATCH"]),
            budget=float(self.config["RETENTION_BUDGET"]),
        )

    def hold_back(self, broker: Broker) -> None:
        """Backpressure: wait while this worker's fan-out is more than ``REALTIME_DISPATCH_LAG``
        behind (at most ``REALTIME_DISPATCH_WAIT``), before the event is stored and stamped.

        A publisher with a session is held back after its commit instead (no lock is held
        then); the dispatcher itself is never held (:class:`~.brokers.DispatchQueue`).
        """
        lag = float(self.config["DISPATCH_LAG"])
        if lag > 0:
            broker.wait_for_room(lag, float(self.config["DISPATCH_WAIT"]))

    def publish_in(
        self, session: Any, stream: str, type_: str, data: Any, key: str | None = None
    ) -> Event:
        """``Realtime.publish(..., session=...)``: the event joins the session's transaction."""
        return _publish_in(self, session, stream, type_, data, key)

    def _sweep_forever(self) -> None:
        stopping = self._stopping
        assert stopping is not None
        interval = float(self.config["SWEEP_INTERVAL"])
        every = float(self.config["RETENTION_INTERVAL"])
        # Workers prune at different moments: one of them at a time is plenty.
        next_prune = time.monotonic() + random.uniform(0.2, 1.0) * every
        while not stopping.wait(interval):
            try:
                self.sweep()
            except Exception:
                log.exception("realtime sweep failed")
            if every > 0 and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + every
                try:
                    deleted = self.prune()
                    if deleted:
                        log.info("realtime retention pruned %d events", deleted)
                except Exception:
                    log.exception("realtime retention failed")

    # ------------------------------------------------------------------ figures

    def health(self) -> dict[str, Any]:
        """Merged into the site's ``/healthz``."""
        return {"realtime": self.stats()}

    def stats(self) -> dict[str, Any]:
        reactor = self.reactor
        return {
            "worker": self.worker or f"{os.uname().nodename}:{os.getpid()}",
            "sockets": self.hub.count(),
            "capacity": int(self.config["MAX_SOCKETS"]),
            "accepting": self.accepting,
            "users_online": len(self.hub.users_online()),
            "broker": self.broker.state()
            if self.broker
            else {"kind": self.broker_kind, "state": "idle"},
            "published": self.hub.published,
            "delivered_live": self.hub.delivered_live,
            "opened": self.opened,
            "closed": self.closed,
            "refused_capacity": self.refused_capacity,
            "refused_auth": self.refused_auth,
            "cut_offs": reactor.cut_offs if reactor else 0,
            "dead_peers": reactor.dead_peers if reactor else 0,
            "close_codes": dict(self.close_codes),
            # Group commit (SQLite): events stored by publishers outside a transaction, and the
            # transactions they took; the fewer transactions per event, the more were shared.
            "group_commit": {"events": self.store.group_events,
                             "transactions": self.store.group_commits},
            # Catch-ups that reused another's read of the log (replays.py), and those that read.
            "shared_reads": {"hits": self.shared_reads.hits, "misses": self.shared_reads.misses},
            # Events that came ahead of their stream's next one and waited for it (ordering.py),
            # and those let go without it (their followers read the log instead).
            "reordered": {"held": self.hub.order.held, "gave_up": self.hub.order.gave_up},
        }

    def cluster_stats(self) -> dict[str, Any]:
        """ops (issue 9): every live worker's figures as this worker last heard them."""
        self.ensure_started()
        return self.cluster.aggregate()


class Realtime:
    """Live streams for a Flask site: ``realtime = Realtime(); realtime.init_app(app)``.

    :param app: the application, or ``None`` to call :meth:`init_app` later.
    :param engine: a SQLAlchemy engine for the durable log; by default ``REALTIME_DATABASE_URL``,
        else the engine of Flask-SQLAlchemy bound to the app.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        engine: Engine | None = None,
        identity: IdentityLoader | None = None,
    ):
        self._engine = engine
        self._identity_loader: IdentityLoader = identity or default_identity
        self._session_loader: SessionLoader | None = None
        self._authorizers: dict[str, Authorizer] = {}
        self._handlers: dict[str, Handler] = {}
        self._connect_hooks: list[Callable[[Connection], None]] = []
        self._disconnect_hooks: list[Callable[[Connection], None]] = []
        self._listeners: list[Callable[[RealtimeState, dict[str, Any]], None]] = []
        self._tick_hooks: list[Callable[[], None]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set up ``app``: settings defaults, the socket blueprint, and ``realtime_attrs()``.

        Register the identity loader (when the site does not use Flask-Login) before this call:
        without either, this raises at once rather than failing at the first handshake.
        """
        if self._identity_loader is default_identity:
            try:
                import flask_login  # noqa: F401
            except ImportError:
                raise RuntimeError(
                    "flask_tidings needs to know who opens a socket: install flask-login, or "
                    "pass Realtime(identity=fn) / decorate fn with @realtime.identity_loader "
                    "before init_app(). fn() returns the user (an object with .id, or an "
                    "Identity) or None."
                ) from None
        for name in dir(defaults):
            if name.isupper():
                app.config.setdefault(f"REALTIME_{name}", getattr(defaults, name))
        if not app.config.get("REALTIME_REDIS_URL"):
            app.config["REALTIME_REDIS_URL"] = app.config.get("REDIS_URL")
        check_server_support()
        store = EventStore(self._engine_factory(app))
        state = RealtimeState(self, app, store)
        app.extensions["realtime"] = state
        _live.add(state)

        from .views import make_blueprint

        app.register_blueprint(make_blueprint(self, state))
        app.context_processor(lambda: {"realtime_attrs": lambda: self.body_attrs(state)})

    def body_attrs(self, state: RealtimeState) -> Markup:
        """``data-*`` attributes for ``<body>``: where the socket is and the cursors at render.

        A page rendered from the database then resumes every stream from the moment it was
        rendered, so an event published between the render and the socket is not missed.
        """
        identity = self.current_identity()
        if identity is None:
            return Markup("")
        streams = self.default_streams(identity)
        heads = state.store.heads(streams)
        url = state.config["URL"]
        return Markup(" ").join(
            Markup('data-{}="{}"').format(name, value)
            for name, value in (
                ("realtime-url", url),
                ("realtime-check", url.rstrip("/") + "/check"),
                ("realtime-cursors", json.dumps({s: heads.get(s, 0) for s in streams})),
            )
        )

    def _engine_factory(self, app: Flask) -> Callable[[], Engine]:
        def factory() -> Engine:
            if self._engine is not None:
                return self._engine
            url = app.config.get("REALTIME_DATABASE_URL")
            if url:
                return create_engine(url)
            if "sqlalchemy" not in app.extensions:
                raise RuntimeError(
                    "flask_tidings stores events in a database: set REALTIME_DATABASE_URL (e.g. "
                    "'sqlite:///instance/realtime.db'), pass Realtime(engine=...), or use "
                    "Flask-SQLAlchemy in this app."
                )
            with app.app_context():
                return app.extensions["sqlalchemy"].engine

        return factory

    # ------------------------------------------------------------------ hooks for the site

    def current_identity(self) -> Identity | None:
        """Who the current request is from, by the registered identity loader."""
        return as_identity(self._identity_loader())

    def handshake_identity(self, state: RealtimeState) -> Identity | None:
        """:meth:`current_identity`, remembered per login session for a few seconds (see
        identities.py) when the site uses Flask-Login's sessions and the broker can tell this
        worker about logouts elsewhere; on a miss, the site's :meth:`session_loader` if any."""
        key = self._session_id()
        if key is None:
            return self.current_identity()
        cache = state.identities
        cached = cache.ttl > 0 and state.broker is not None and state.broker.connected
        if not cached:
            return self._load_session(key)
        identity = cache.get(key, time.monotonic())
        if identity is not None:
            return identity
        generation = cache.generation
        identity = self._load_session(key)
        if identity is not None:
            cache.put(key, identity, time.monotonic(), generation)
        return identity

    def _session_id(self) -> str | None:
        """Flask-Login's ``"<id>.<session version>"`` from the signed session, or None where
        Flask-Login itself must decide (another identity loader, strong session protection,
        no session: a remember-me cookie, a request loader)."""
        if self._identity_loader is not default_identity:
            return None
        manager = getattr(current_app, "login_manager", None)
        if manager is None:
            return None
        mode = current_app.config.get("SESSION_PROTECTION", manager.session_protection)
        if mode == "strong":
            return None  # strong protection may refuse a session for its address: load it
        from flask import session

        key = session.get("_user_id")
        return key if isinstance(key, str) and key else None

    def _load_session(self, key: str) -> Identity | None:
        """Who the session ``key`` is for: the site's :meth:`session_loader` when it vouches
        for the key, else Flask-Login's whole path (which also tries a remember-me cookie when
        the session no longer holds, so a refusal stays Flask-Login's to make)."""
        if self._session_loader is not None:
            identity = as_identity(self._session_loader(key))
            if identity is not None:
                return identity
        return self.current_identity()

    def session_loader(self, fn: SessionLoader) -> SessionLoader:
        """Register a lighter check of a Flask-Login session for the socket handshake.

        ``fn(session_id)`` gets what Flask-Login's user loader gets from the session and returns
        the user (or a row with ``id``, ``username``, ``role``; or an :class:`Identity`) when
        the user loader would accept it, else ``None``. Only the fields an identity needs are
        read, so one query of a few columns can replace building the site's user object: on a
        handshake that was the largest single cost (issue 18). ``None`` is not a refusal: the
        handshake then asks Flask-Login, which may still log the user in from a remember-me
        cookie. Runs in the handshake's request context, before the ``Origin`` check.
        """
        self._session_loader = fn
        return fn

    def identity_loader(self, fn: IdentityLoader) -> IdentityLoader:
        """Register how to tell who opens a socket (default: Flask-Login's ``current_user``)."""
        self._identity_loader = fn
        return fn

    def authorizer(self, prefix: str) -> Callable[[Authorizer], Authorizer]:
        """Register who may follow streams named ``prefix:<id>``: ``fn(identity, id) -> bool``.

        It runs inside an app context (the database works), not a request context: decide from
        ``identity``, not ``current_user`` or ``request``. Rebuilding a request per subscribe
        cost more than the rest of the subscribe (issue 18).
        """

        def register(fn: Authorizer) -> Authorizer:
            self._authorizers[prefix] = fn
            return fn

        return register

    def on(self, type_: str) -> Callable[[Handler], Handler]:
        """Register a handler for client messages of ``type_``: ``fn(conn, data) -> reply``."""

        def register(fn: Handler) -> Handler:
            self._handlers[type_] = fn
            return fn

        return register

    def on_connect(self, fn: Callable[[Connection], None]) -> Callable[[Connection], None]:
        self._connect_hooks.append(fn)
        return fn

    def on_disconnect(self, fn: Callable[[Connection], None]) -> Callable[[Connection], None]:
        self._disconnect_hooks.append(fn)
        return fn

    def listener(self, fn: Callable[[RealtimeState, dict[str, Any]], None]):
        """Receive every broker message in every worker (the ops dashboard uses this)."""
        self._listeners.append(fn)
        return fn

    def can_follow(self, identity: Identity, stream: str) -> bool:
        if stream == "broadcast":
            return True
        prefix, _, rest = stream.partition(":")
        if prefix == "user":
            return rest == identity.user_id
        if prefix == "role":
            return rest in identity.roles
        fn = self._authorizers.get(prefix)
        return bool(fn and rest and fn(identity, rest))

    def needs_authorizer(self, stream: str) -> bool:
        """True when :meth:`can_follow` would ask one of the site's authorizers about ``stream``
        (which may query the database, so it needs an app context)."""
        prefix, _, rest = stream.partition(":")
        return bool(rest) and prefix not in ("user", "role") and prefix in self._authorizers

    @staticmethod
    def default_streams(identity: Identity) -> list[str]:
        return [
            f"user:{identity.user_id}",
            "broadcast",
            *(f"role:{r}" for r in sorted(identity.roles)),
        ]

    # ------------------------------------------------------------------ the public API

    def state(self) -> RealtimeState:
        """This app's state: the current app's, or this process's only one from a plain thread."""
        if has_app_context():
            state = current_app.extensions.get("realtime")
            if state is None or state.ext is not self:
                raise RuntimeError(
                    "This app has no realtime layer: call realtime.init_app(app) in the factory."
                )
            return state
        mine = process_states(self)
        if len(mine) == 1:
            return mine[0]
        if not mine:
            raise RuntimeError("Realtime.init_app(app) has not been called in this process.")
        raise RuntimeError(
            "Several apps use this realtime layer in this process: call it inside "
            "`with app.app_context():` to say which."
        )

    def publish(
        self,
        stream: str,
        type_: str,
        data: Any = None,
        *,
        session: Any = None,
        key: str | None = None,
    ) -> Event:
        """Store an event on ``stream`` and push it to every follower, in every worker.

        :param stream: e.g. ``"user:7"``, ``"broadcast"``, ``"role:admin"``, ``"room:3"``.
        :param type_: the event's ``type`` on the wire, e.g. ``"notification"``.
        :param data: anything JSON-serializable.
        :param session: a SQLAlchemy session (``db.session``) whose transaction the event joins:
            it is stored through the session's own connection, commits or rolls back with the
            rows the caller wrote, and is pushed only after the commit. "Stored" then always
            means "will be delivered" and a view needs no second pooled connection. Without
            it the event commits at once, in a transaction of its own.
        :param key: an idempotency key (a form's one-time token, an ``Idempotency-Key``
            header): if ``stream`` already holds an event published with this key, nothing is
            stored or pushed and that first event comes back with ``replayed=True``. A retry
            after a lost answer or a double submit thus publishes once. Keys are remembered as
            long as their event is kept (``REALTIME_RETENTION_*``).
        :returns: the stored :class:`Event` (with its sequence number).
        :raises PublishTimeout: the log stayed locked past ``REALTIME_PUBLISH_TIMEOUT``.
        """
        _check_event(stream, type_, data)
        key = check_key(key)
        state = self.state()
        if session is not None:
            return state.publish_in(session, stream, type_, data, key)
        broker = state.ensure_publishing() if state.deliver_live else None
        if broker is not None:
            state.hold_back(broker)
        timeout = float(state.config["PUBLISH_TIMEOUT"])
        state.store.lock_timeout = timeout
        announced: list[bool] = []

        def announce(conn: Any, event: Event) -> None:
            if broker is not None:
                announced.append(broker.announce_in(conn, event))

        def push(event: Event) -> None:
            if broker is not None and not any(announced):
                # Queued, never sent from here: a hung broker cannot hold a publisher up.
                broker.publish(_event_message(event))

        # Concurrent publishers share one transaction on SQLite (see EventStore.publish).
        return state.store.publish(
            stream, type_, data, key=key, announce=announce, push=push, timeout=timeout
        )

    def notify(
        self,
        user: Any,
        type_: str,
        data: Any = None,
        *,
        session: Any = None,
        key: str | None = None,
    ) -> Event:
        """Publish to one user's private stream (every tab, every worker).

        :param user: a user object (``get_id()`` or ``id``) or a user id.
        :param session: as for :meth:`publish`.
        :param key: as for :meth:`publish`.
        """
        return self.publish(user_stream(user), type_, data, session=session, key=key)

    def broadcast(
        self,
        type_: str,
        data: Any = None,
        audience: Any = None,
        *,
        session: Any = None,
        key: str | None = None,
    ) -> list[Event]:
        """Publish to everyone (``audience=None``), a role (``{"role": "admin"}``) or chosen
        users (``{"users": [...]}``); ``session`` and ``key`` as for :meth:`publish` (the key
        applies to each stream: a retry stores nothing on any of them)."""
        if audience in (None, "all", "everyone"):
            return [self.publish("broadcast", type_, data, session=session, key=key)]
        if isinstance(audience, dict) and audience.get("role"):
            return [
                self.publish(f"role:{audience['role']}", type_, data, session=session, key=key)
            ]
        if isinstance(audience, dict) and "users" in audience:
            return [
                self.notify(user, type_, data, session=session, key=key)
                for user in _unique(audience["users"])
            ]
        raise ValueError("audience is None, {'role': name} or {'users': [...]}")

    def emit(self, stream: str, type_: str, data: Any = None) -> None:
        """Push an ephemeral event (typing, presence): not stored, not replayed."""
        _check_event(stream, type_, data)
        broker = self.state().ensure_publishing()
        broker.publish(
            {
                "k": "event",
                "stream": stream,
                "seq": None,
                "payload": envelope(stream, None, type_, data),
            }
        )

    def disconnect_user(
        self, user: Any, code: int = SIGNED_OUT, reason: str = "signed out"
    ) -> None:
        """Close every socket of ``user`` in every worker (logout, deactivation)."""
        state = self.state()
        broker = state.ensure_publishing()
        message = {
            "k": "control",
            "op": "disconnect_user",
            "user": _user_id(user),
            "code": code,
            "reason": reason,
        }
        # This worker's sockets close now, whatever the broker does; the echo is harmless.
        state._control(dict(message))
        broker.publish(message)

    def create_tables(self) -> None:
        """Create the event log's tables where missing (a site's ``init-db``); with Alembic,
        add ``flask_tidings.metadata`` to the migrations' ``target_metadata`` instead."""
        self.state().store.create_tables()

    def stats(self) -> dict[str, Any]:
        """This worker's figures (sockets, deliveries, broker state)."""
        return self.state().stats()

    # ------------------------------------------------------------------ read-only views for sites

    def published(self, stream: str, key: str) -> Event | None:
        """The event published on ``stream`` with idempotency ``key`` (``replayed=True``), or
        ``None``: lets a site answer a retry before it does any work again."""
        return self.state().store.find(stream, check_key(key) or "")

    def heads(self, streams: Iterable[str]) -> dict[str, int]:
        """The last sequence number of each stream (0 or absent: nothing published yet)."""
        return self.state().store.heads(list(streams))

    def head(self, stream: str) -> int:
        return self.state().store.head(stream)

    def connections(self, user: Any = None) -> list[Connection]:
        """This worker's open connections (of one user, if given). Read ``conn.id``,
        ``conn.identity`` and ``conn.followed``; write only through ``conn.send_json``."""
        hub = self.state().hub
        return hub.user_connections(_user_id(user)) if user is not None else hub.connections()

    def cluster_stats(self) -> dict[str, Any]:
        """Every live worker's figures, merged (what the ops dashboard shows)."""
        return self.state().cluster_stats()

    @property
    def site_id(self) -> str:
        """What tells this site apart on shared services (``REALTIME_SITE_ID``, else a hash of
        its database): name shared keys after it, as the brokers' channels are."""
        return self.state().site_id

    def every_tick(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Run ``fn`` in each serving worker once per ``REALTIME_CLUSTER_INTERVAL`` seconds,
        in an app context (periodic chores: presence, dashboards)."""
        self._tick_hooks.append(fn)
        return fn


def _event_message(event: Event) -> dict[str, Any]:
    return {"k": "event", "stream": event.stream, "seq": event.seq, "payload": event.payload}


#: ``session.info`` key: events stored in the session's transaction, waiting for its commit.
_PENDING = "tidings_pending"


def _publish_in(
    state: RealtimeState, session: Any, stream: str, type_: str, data: Any, key: str | None
) -> Event:
    real: Session = session() if isinstance(session, scoped_session) else session
    connection = real.connection()
    ours, theirs = state.store.engine.url, connection.engine.url
    if ours.render_as_string() != theirs.render_as_string():
        raise RuntimeError(
            "publish(session=...) stores the event in the session's transaction, so the "
            f"durable log must be in the session's database; it is in {ours!r}, the session "
            f"uses {theirs!r} (REALTIME_DATABASE_URL)."
        )
    broker = state.ensure_publishing() if state.deliver_live else None
    state.store.lock_timeout = float(state.config["PUBLISH_TIMEOUT"])
    announced: list[bool] = []

    def announce(conn: Any, event: Event) -> None:
        if broker is not None:
            announced.append(broker.announce_in(conn, event))

    # No publish lock here: the caller's transaction holds SQLite's one write lock from its
    # first write until its commit, which already puts publishers in line, and taking our lock
    # after it (while a publisher without a session holds ours and waits for SQLite's) would
    # only deadlock the two until a timeout.
    event = state.store.append(
        stream, type_, data, connection=connection, announce=announce, key=key
    )
    if broker is not None and not event.replayed and not any(announced):
        transaction = real.get_nested_transaction() or real.get_transaction()
        _pending(real).append((transaction, broker, _event_message(event), state))
    return event


def _pending(session: Session) -> list[tuple[Any, Broker, dict[str, Any], RealtimeState]]:
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        sa_event.listen(session, "after_commit", _after_commit)
        sa_event.listen(session, "after_soft_rollback", _after_soft_rollback)
        sa_event.listen(session, "after_transaction_end", _after_transaction_end)
    return pending


def _after_commit(session: Session) -> None:
    pending = session.info.get(_PENDING) or []
    waiting, pending[:] = list(pending), []
    if waiting:
        # Backpressure after the commit, when the transaction holds no lock any more (held
        # back inside it, on SQLite, every other writer would wait with us).
        waiting[0][3].hold_back(waiting[0][1])
    for _, broker, message, _state in waiting:
        broker.publish(message)  # queued: never raises into the caller's commit


def _after_soft_rollback(session: Session, previous: Any) -> None:
    # A rolled-back savepoint takes its events with it; the rest of the transaction stands.
    pending = session.info.get(_PENDING) or []
    pending[:] = [entry for entry in pending if not _within(entry[0], previous)]


def _after_transaction_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the whole transaction is over; committed ones are gone
        pending = session.info.get(_PENDING)
        if pending:
            pending.clear()


def _within(transaction: Any, ancestor: Any) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def _unique(users: Iterable[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for user in users:
        seen.setdefault(_user_id(user), user)
    return list(seen.values())

