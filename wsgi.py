"""WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app`` (and ``flask`` finds it too).

Demo accounts are not created here: this module is imported once per gunicorn worker, so that
job lives in gunicorn.conf.py's ``when_ready`` hook, which runs once.
"""

from app import create_app

app = create_app()
