"""How the site runs in production: ``gunicorn -c tests/adopter/gunicorn.conf.py
tests.adopter.site:app`` (tests override the bind address and worker count on the command line)."""

bind = "127.0.0.1:8000"
workers = 2
worker_class = "gthread"
threads = 8

from flask_tidings.gunicorn import post_worker_init  # noqa: E402, F401  # + tidings
