"""Defaults for every ``REALTIME_*`` setting, in one place so the docs and the code agree."""

from __future__ import annotations

#: URL of the one WebSocket endpoint a page opens (one socket per tab, every stream multiplexed).
URL = "/ws"
#: Origins allowed besides the site's own (scheme://host[:port]). Cross-site handshakes get 403.
ALLOWED_ORIGINS: list[str] = []
#: "auto", "local", "memory", "redis", "postgres" or "database". Auto picks Redis when a URL is
#: set, else PostgreSQL LISTEN/NOTIFY when the log is in PostgreSQL, else "local" (Unix datagrams
#: between the processes of one host: SQLite).
BROKER = "auto"
#: Redis URL for fan-out between workers and hosts; falls back to the site's ``REDIS_URL``.
REDIS_URL: str | None = None
#: Channel for Redis pub/sub and PostgreSQL NOTIFY. Unset: ``tidings-<site id>``, a channel of
#: this site's own (see SITE_ID), so sites sharing one Redis never hear each other.
REDIS_CHANNEL: str | None = None
#: How many gunicorn workers share this site; the config reads ``WEB_CONCURRENCY``.
WORKERS = 1
#: Sockets one worker holds at most (admission control: past it, 503 + Retry-After). A socket
#: holds no thread: the reactor reads them all and a small pool runs their commands.
MAX_SOCKETS = 10000
#: Seconds a worker remembers who a login session is, so a reload, another tab or a reconnect
#: skips the user load. Logout, password change and deactivation (``disconnect_user``) reach
#: every worker and end it at once; other changes to a user (roles) show at the next load,
#: unless the site calls ``disconnect_user``. 0 turns it off. Used with Flask-Login only.
IDENTITY_CACHE_SECONDS = 30.0
#: Threads per worker that run client commands (subscribe, catch-up, chat sends ...).
COMMAND_THREADS = 16
#: Sockets one user may hold in one worker (tabs). Past it the handshake gets 429.
MAX_SOCKETS_PER_USER = 20
#: Handshakes one user may make per minute in one worker; past it 429. A flooder closed with 4029
#: cannot simply reconnect for a fresh allowance, while a restart's reconnect of many tabs passes.
HANDSHAKES_PER_MINUTE = 60
#: Sockets one client address may hold in one worker (open or still in their handshake), however
#: many accounts it signs up; past it 429. The address is ``request.remote_addr``: behind a
#: proxy, install ProxyFix for the trusted hops, or every client shares the proxy's address.
#: Raise it where many people share one address (a company's NAT); 0 turns it off.
MAX_SOCKETS_PER_ADDRESS = 200
#: Handshakes one client address may attempt per minute in one worker (refused ones too, before
#: any session lookup); past it 429. 0 turns it off.
HANDSHAKES_PER_MINUTE_PER_ADDRESS = 600
#: Seconds a refused client is told to wait (``Retry-After``) when the worker is full.
RETRY_AFTER = 5
#: Clients per second a stopping worker asks back: the 1001 close of each socket says when to
#: reconnect ("restart; retry in 1.7s"), spread over ``sockets / RESTART_RATE`` seconds ...
#: About what one worker takes in (~2.5 ms of CPU per handshake and subscribe): asked back
#: faster, 5,000 clients only queued at the new worker in front of its pages (issue 18's storm:
#: 500/s over 10 s: all back 25.7 s after the new worker was up, pages p99 7.2 s; 250/s: 21.0 s
#: and 2.3 s).
RESTART_RATE = 250.0
#: ... but never longer than this: 5,000 sockets come back within 20 s, 50 within a fifth.
RESTART_WINDOW = 30.0
#: Seconds between server heartbeats (a WebSocket ping plus an ``hb`` message for browsers).
HEARTBEAT = 25.0
#: Largest inbound message in UTF-8 bytes (as sent, not characters); a larger one closes the
#: socket with 1009.
MAX_MESSAGE_BYTES = 64 * 1024
#: Frames one inbound message may be split into; more closes the socket with 1008.
MAX_FRAGMENTS = 32
#: Seconds a message may stay unfinished (its first frame in, its last not); then 1008.
MESSAGE_TIMEOUT = 10.0
#: Bytes a connection may have queued for a client that does not read, before it is cut off (4008).
OUTBOX_BYTES = 1024 * 1024
#: Seconds a queued frame may wait for a client that does not read, before it is cut off (4008).
SEND_TIMEOUT = 10.0
#: Inbound frames per second a connection may send on average (every frame counts: a message's
#: continuation frames, pings and pongs too) ...
RATE = 20.0
#: ... with bursts up to this many; an excess message gets a ``rate_limited`` error frame, an
#: excess ping no pong.
BURST = 40
#: Refused frames after which a flooding connection is closed (4029).
FLOOD_CLOSE_AFTER = 100
#: Messages (commands) per second all one user's sockets in one worker may send together, on
#: top of each socket's own rate: 20 tabs may not send 20 times the rate. An excess message gets
#: ``rate_limited``; a socket within its own rate is not closed (4029) for it: answering costs
#: the reactor a few microseconds, a closed socket's reconnect a whole handshake. 0: no budget.
USER_RATE = 40.0
#: ... with bursts up to this many (a restart reopening every tab subscribes them all at once).
USER_BURST = 200
#: Rows read per query when a client catches up from its cursor.
REPLAY_PAGE = 500
#: Seconds between checks of the durable log for events a broker failed to announce.
SWEEP_INTERVAL = 2.0
#: Seconds between polls of the durable log by the "database" broker.
POLL_INTERVAL = 0.1
#: Seconds between the reports each worker sends the others (ops dashboard, ``/metrics``).
CLUSTER_INTERVAL = 1.0
#: SQLAlchemy URL of the event log for a site without Flask-SQLAlchemy (or pass ``engine=``).
DATABASE_URL: str | None = None
#: Folder of the "local" broker's sockets (one folder per database inside); the temp dir if unset.
LOCAL_DIR: str | None = None
#: Stamped on every message this site sends through a shared broker; messages with another id
#: are ignored. Unset: a hash of the durable log's database (its URL without the password and
#: driver, a SQLite path made absolute), the same in every process of the site. Set it when the
#: processes of one site reach the same database by different URLs.
SITE_ID: str | None = None
#: Seconds a publisher waits for the log (SQLite's publish lock, a PostgreSQL row lock) before
#: it gives up with ``PublishTimeout``; nothing is stored then.
PUBLISH_TIMEOUT = 5.0
#: Seconds the oldest event waiting for this worker's fan-out may have waited before a publisher
#: in this worker is held back (backpressure). Under a burst (one broadcast per request, back to
#: back, to many sockets) publishers then go at the speed of the fan-out, and an event waits for
#: its batch about this long instead of behind an ever longer queue. 0 turns it off.
DISPATCH_LAG = 0.01
#: ... and the longest a publisher is held back; then it publishes anyway (never an error).
DISPATCH_WAIT = 1.0
#: Seconds a broker's socket may wait on Redis; a publisher never waits on it (messages leave
#: from a queue), only the sending and listening threads do.
BROKER_TIMEOUT = 5.0
#: Seconds a worker waits for its broker to connect before serving its first socket anyway.
BROKER_READY_TIMEOUT = 5.0
#: Seconds events are kept in the durable log (0: for ever). A client resuming from before
#: what is kept gets a ``reset`` for that stream (docs/protocol.md).
RETENTION_SECONDS = 7 * 24 * 3600
#: Newest events kept per stream (0: no limit), so one busy stream cannot fill the database.
RETENTION_PER_STREAM = 10000
#: Seconds between retention passes (each worker's sweep thread runs them).
RETENTION_INTERVAL = 60.0
#: Rows deleted per transaction when pruning, so publishers never wait long behind it ...
RETENTION_BATCH = 2000
#: ... and seconds of pruning per pass at most; the rest waits for the next pass.
RETENTION_BUDGET = 1.0
