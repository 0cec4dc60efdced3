"""Red-team acceptance of issue 14: each attack of its table, bounded, against the real site.

    .venv/bin/python -m bench.attacks                    # every attack, nginx in front
    .venv/bin/python -m bench.attacks --direct           # the same against bare gunicorn
    .venv/bin/python -m bench.attacks --only slowloris   # one (or a comma-separated few)
    .venv/bin/python -m bench.attacks --list             # names, efforts, what each does

The site runs as ``make run`` runs it: gunicorn with gunicorn.conf.py (1 worker, its default
threads), development mode, a fresh SQLite database migrated with ``flask db upgrade``, and the
shipped ``deploy/nginx.conf`` in front (a private nginx on a free port, ``TRUSTED_PROXY_HOPS=1``);
``--direct`` leaves nginx out for the "before" comparison. Every client talks to 127.0.0.1 only.

While an attack runs, a victim in a process of its own (so the attacker's threads cannot slow
its clock) keeps one logged-in user busy: a page loop (``GET /``) and one socket doing ``ping``
round trips, subscribed to its own stream, on which a separate publisher process stores one
event a second. Each row reports the victim's page p99 just before the attack (no attack) and
during it, the socket's round-trip p99, errors, events lost, and what the attacker got back
(HTTP statuses, close codes). The victim comes from 127.0.0.1; each attack from an address of
its own (127.0.0.10 and up), as different machines would, so one row's per-address limits do
not leak into the next.

Bounded: each attack stops after its stated count or its time (at most 30 s), whichever comes
first; the whole run takes a few minutes. The machine's load average is printed beside the
figures: on a shared 2-core machine the attacker, the victim and the server share the cores,
which the server's defences cannot help.
"""
